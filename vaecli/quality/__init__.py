"""Reconstruction quality: PSNR, SSIM and LPIPS."""
