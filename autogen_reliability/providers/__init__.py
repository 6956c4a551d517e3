"""What the library knows about particular model clients and SDKs, kept in one place.

Everything that depends on how AutoGen's model clients or the provider SDKs are
built inside (their private attributes, their retry settings, their HTTP
clients) lives in this package, so an upgrade of either touches only here.
"""

from ._openai import api_key_of, innermost, provider_arguments

__all__ = ["api_key_of", "innermost", "provider_arguments"]
