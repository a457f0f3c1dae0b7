"""metasched from Python: read meta-trained checkpoints (``metasched.checkpoint``, numpy only)
and use them as PyTorch learning-rate schedulers (``metasched.torch.LearnedLR``)."""

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, read_safetensors, write_safetensors

__all__ = ["Checkpoint", "CheckpointError", "load_checkpoint", "read_safetensors", "write_safetensors"]
__version__ = "0.1.0"
