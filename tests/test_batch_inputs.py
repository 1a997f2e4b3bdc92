"""What a folder search or a glob takes as inputs, through the real CLI: never vaecli's own outputs, and
never anything left out silently (issue 11's follow-ups: reruns that took reconstructions and decoded
images for new photos, dotfiles and dangling links dropped without a word)."""

from __future__ import annotations

import shutil

from tests.clitools import by_name, noise_image, run_json, run_main, snapshot


def _common(weights):
    return ("--weights", weights, "--device", "cpu")


def _inputs(doc) -> list[str]:
    return sorted(r["input"] for r in doc["results"])


def test_reconstructions_inside_the_photos_folder_are_not_new_photos(tmp_path, capsys, cli_weights):
    """`roundtrip photos/ -o photos/recon/`, then other commands over photos/: recon/*.png are not inputs
    (before: `encode photos/ -o lat/` encoded the reconstructions too, into lat/recon/)."""
    photos = tmp_path / "photos"
    noise_image(photos / "a.png", 24, 16, 0)
    noise_image(photos / "b.jpg", 16, 24, 1)
    assert run_main(capsys, "roundtrip", photos, "-o", photos / "recon", *_common(cli_weights), "--no-lpips", "--quiet")[0] == 0
    assert sorted(snapshot(photos / "recon")) == ["a.png", "b.png"]
    sources = [str(photos / "a.png"), str(photos / "b.jpg")]

    code, doc, err = run_json(capsys, "encode", photos, "-o", tmp_path / "lat", *_common(cli_weights))
    assert code == 0 and _inputs(doc) == sources, err
    assert "2 images or videos vaecli wrote from files in the same folder" in err
    assert sorted(snapshot(tmp_path / "lat")) == ["a.safetensors", "b.safetensors"]
    # a second roundtrip into another folder, and a glob reaching into recon/: the same two photos
    code, doc, err = run_json(capsys, "roundtrip", photos, "-o", tmp_path / "recon2", *_common(cli_weights), "--no-lpips")
    assert code == 0 and _inputs(doc) == sources, err
    code, doc, err = run_json(capsys, "roundtrip", str(photos / "**" / "*.png"), *_common(cli_weights), "--no-lpips")
    assert code == 0 and _inputs(doc) == [str(photos / "a.png")], err

    # the dataset moved (copied) with its outputs: the recorded paths are stale, the recorded bytes still say so
    moved = tmp_path / "moved"
    shutil.copytree(photos, moved)
    code, doc, err = run_json(capsys, "encode", moved, "-o", tmp_path / "lat-moved", *_common(cli_weights))
    assert code == 0 and _inputs(doc) == [str(moved / "a.png"), str(moved / "b.jpg")], err

    # named explicitly, a reconstruction is an input like any image
    code, doc, err = run_json(capsys, "encode", photos / "recon" / "a.png", "-o", tmp_path / "lat-recon", *_common(cli_weights))
    assert code == 0 and _inputs(doc) == [str(photos / "recon" / "a.png")] and "left out" not in err


def test_encode_after_decode_into_the_same_folder_takes_only_the_photos(tmp_path, capsys, cli_weights):
    """`encode photos/ -o photos/`, `decode photos/ -o photos/`, then `encode photos/ -o photos/` again: the
    decoded b.png is not a new photo (before: it claimed b.safetensors, and b.jpg and b.png both failed)."""
    photos = tmp_path / "photos"
    noise_image(photos / "a.jpg", 24, 16, 0)
    noise_image(photos / "b.jpg", 16, 24, 1)
    noise_image(photos / "c.png", 16, 16, 2)
    assert run_main(capsys, "encode", photos, "-o", photos, *_common(cli_weights), "--quiet")[0] == 0
    code, doc, err = run_json(capsys, "decode", photos, "-o", photos)
    res = by_name(doc)
    assert code == 1 and res["a.safetensors"]["status"] == "ok" and res["c.safetensors"]["status"] == "failed", err  # c.png is the user's
    assert (photos / "a.png").is_file() and (photos / "b.png").is_file()

    before = snapshot(photos)
    code, doc, err = run_json(capsys, "encode", photos, "-o", photos, *_common(cli_weights))
    assert code == 0, err
    assert _inputs(doc) == [str(photos / n) for n in ("a.jpg", "b.jpg", "c.png")]
    assert [r["status"] for r in doc["results"]] == ["skipped"] * 3
    assert "2 images or videos vaecli wrote from files in the same folder (e.g. " in err
    assert snapshot(photos) == before
    # decode over the same folder still takes every latent vaecli wrote: they are its inputs
    code, doc, _ = run_json(capsys, "decode", photos, "-o", photos)
    assert len(doc["results"]) == 3


def test_hidden_files_and_dangling_links_are_reported_not_dropped_silently(tmp_path, capsys, cli_weights):
    """A folder with a dotfile, a file in a hidden folder and two dangling symlinks: one warning line with the counts;
    a dangling link named explicitly fails alone, naming the file and its missing target."""
    photos = tmp_path / "photos"
    noise_image(photos / "a.png", 16, 16, 0)
    noise_image(photos / ".b.png", 16, 16, 1)
    noise_image(photos / ".cache" / "c.png", 16, 16, 2)
    (photos / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (photos / "sub").mkdir()
    (photos / "sub" / "gone2.jpg").symlink_to("missing.jpg")
    (photos / "notes.txt").write_text("not an image: left out without a word, as before")

    code, doc, err = run_json(capsys, "encode", photos, "-o", tmp_path / "lat", *_common(cli_weights))
    assert code == 0 and _inputs(doc) == [str(photos / "a.png")]
    lines = [line for line in err.splitlines() if "left out" in line]
    assert len(lines) == 1, err
    assert f"2 hidden files (e.g. {photos / '.b.png'})" in lines[0]
    assert f"2 dangling symbolic links (e.g. {photos / 'gone.png'})" in lines[0]
    assert "notes.txt" not in lines[0] and "vaecli wrote" not in lines[0]

    code, doc, err = run_json(capsys, "encode", photos / "gone.png", photos / "a.png", "-o", tmp_path / "lat", *_common(cli_weights))
    res = by_name(doc)
    assert code == 1 and res["gone.png"]["status"] == "failed" and res["a.png"]["status"] == "skipped"
    assert f"{photos / 'gone.png'}: a dangling symbolic link (its target {tmp_path / 'nowhere.png'} does not exist)" in err
    assert "left out" not in err  # nothing was searched

    code, _, err = run_json(capsys, "encode", photos / "a.png", "-o", tmp_path / "lat", *_common(cli_weights))
    assert code == 0 and "Warning" not in err  # a clean run says nothing


def test_images_decoded_from_latents_of_these_photos_are_not_new_photos(tmp_path, capsys, cli_weights):
    """encode photos/ -o lat/, decode lat/ -o photos/dec/: the decoded images name the latents as their source,
    whose own source is in photos/; a rerun over photos/ (a folder or a glob) takes only the photos (before:
    dec/*.png were encoded, and the glob's real photos failed on clashing output names)."""
    photos = tmp_path / "photos"
    noise_image(photos / "a.jpg", 24, 16, 0)
    noise_image(photos / "sub" / "c.png", 16, 24, 1)
    assert run_main(capsys, "encode", photos, "-o", tmp_path / "lat", *_common(cli_weights), "--quiet")[0] == 0
    assert run_main(capsys, "decode", tmp_path / "lat", "-o", photos / "dec", "--quiet")[0] == 0
    sources = [str(photos / "a.jpg"), str(photos / "sub" / "c.png")]
    code, doc, err = run_json(capsys, "encode", photos, "-o", tmp_path / "lat2", *_common(cli_weights))
    assert code == 0 and _inputs(doc) == sources and "2 images or videos vaecli wrote" in err, err
    code, doc, err = run_json(capsys, "encode", str(photos / "**"), "-o", tmp_path / "lat3", *_common(cli_weights))
    assert code == 0 and _inputs(doc) == sources, err


def test_a_photo_saved_under_a_new_name_from_a_vaecli_output_is_the_users(tmp_path, capsys, cli_weights):
    """Pillow keeps a JPEG's comment (vaecli's provenance) through an edit: a file under a name vaecli would not
    have given it is the user's, and is taken."""
    from PIL import Image

    photos = tmp_path / "photos"
    noise_image(photos / "a.png", 24, 16, 0)
    assert run_main(capsys, "encode", photos, "-o", tmp_path / "lat", *_common(cli_weights), "--quiet")[0] == 0
    assert run_main(capsys, "decode", tmp_path / "lat", "-o", photos / "edits", "--format", "jpg", "--quiet")[0] == 0
    edited = Image.open(photos / "edits" / "a.jpg")
    assert "vaecli" in edited.info["comment"].decode()
    edited.rotate(90).save(photos / "rotated.jpg", comment=edited.info["comment"])
    code, doc, err = run_json(capsys, "encode", photos, "-o", tmp_path / "lat2", *_common(cli_weights))
    assert code == 0 and _inputs(doc) == [str(photos / "a.png"), str(photos / "rotated.jpg")], err  # edits/a.jpg is vaecli's


def test_a_linked_folder_is_searched_once_and_a_link_loop_ends(tmp_path, capsys, cli_weights):
    photos, shared = tmp_path / "photos", tmp_path / "shared"
    noise_image(photos / "own.png", 16, 16, 0)
    noise_image(shared / "s.png", 16, 16, 1)
    (photos / "linked").symlink_to(shared, target_is_directory=True)
    (shared / "loop").symlink_to(shared, target_is_directory=True)  # shared/loop/loop/... would never end
    code, doc, err = run_json(capsys, "encode", photos, "-o", tmp_path / "lat", *_common(cli_weights))
    assert code == 0 and _inputs(doc) == [str(photos / "linked" / "s.png"), str(photos / "own.png")], err


def test_a_glob_whose_every_match_was_left_out_says_so(tmp_path, capsys, cli_weights):
    photos = tmp_path / "photos"
    noise_image(photos / "a.png", 24, 16, 0)
    assert run_main(capsys, "roundtrip", photos, "-o", photos / "recon", *_common(cli_weights), "--no-lpips", "--quiet")[0] == 0
    code, out, err = run_main(capsys, "encode", str(photos / "re*" / "*.png"), "-o", tmp_path / "lat", *_common(cli_weights))
    assert code == 2 and "every" in err and "was left out" in err and "matches no" not in err
