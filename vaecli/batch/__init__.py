"""Batch work over files, the same three steps for encode, decode and roundtrip: plan -> run -> write.

inputs (arguments -> files) -> plan (jobs, every output path decided, clashes and inputs-as-outputs
refused) -> freshness (each existing output judged by its provenance: skip, redo or refuse) -> run
(the failure boundary, loading ahead within a byte budget, batches) -> encode / decode / roundtrip
(the model work) -> report (results, summary, exit code); distributed shards jobs under torchrun.
"""
