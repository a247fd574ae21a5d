from ._hashmap import HashMap as HashMap

__version__: str
__all__ = ["HashMap", "__version__"]
