from minillm.models.gpt import GPT, GPTConfig
from minillm.models.llama import Llama, LlamaConfig

__all__ = ["GPT", "GPTConfig", "Llama", "LlamaConfig"]
