"""Other libraries' checkpoints in and out (Hugging Face: ``seqlab.interop.hf``)."""
