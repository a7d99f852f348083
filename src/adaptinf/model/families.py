"""The tiny demo models' families by name, torch-free (the CLI lists them before importing torch)."""

TINY_FAMILIES = ("llava", "llava-next", "qwen2-vl", "qwen2.5-vl")
