"""What the library knows about particular model clients and SDKs, kept in one place.

Everything that depends on how AutoGen's model clients, agents and teams or the
provider SDKs are built inside (their private attributes, their retry settings,
their HTTP clients, their exception classes' modules) lives in this package, so
an upgrade of either touches only here. No module outside it reads a private
name of AutoGen or an SDK (``tests/test_structure.py`` checks).

- ``_clients.py``: where AutoGen's model clients keep their SDK client and
  configuration; :func:`innermost`, the one rule for seeing through wrappers.
- ``_identity.py``: the provider and model a client talks to (for pricing), the
  model an attempt asks for (``ClientModel``: the one rule the usage rows, metrics
  and spans share; ``AskedModels``: with its provider, read once per client and
  model), a name to show, the API key it sends.
- ``_arguments.py``: what each kind of client is sent per attempt.
- ``_sdk_retries.py``: switching off the SDK's own retries.
- ``_usage_tap.py`` and ``_http_body.py``: the provider's usage read off the wire.
- ``_agents.py``: where agents and teams keep their model client and members.
- ``_lookup.py``: an SDK's module or class, only where it is already imported.
- ``_health_checks.py``: the cheapest request that shows a provider answers (the health probe's).

This package sits below the rest of the library: it imports nothing from it
(``_redaction`` uses its lookup, so the arrow may not point back).
"""

from ._agents import has_started as has_started
from ._agents import model_client_of as model_client_of
from ._agents import participants_of as participants_of
from ._agents import run_inside as run_inside
from ._agents import set_model_client as set_model_client
from ._arguments import provider_arguments
from ._arguments import strict_json_schema as strict_json_schema
from ._clients import inner_client as inner_client
from ._clients import innermost
from ._clients import response_format_of as response_format_of
from ._health_checks import model_listing as model_listing
from ._health_checks import one_token_arguments as one_token_arguments
from ._http_body import content_decoder as content_decoder
from ._identity import AskedModels as AskedModels
from ._identity import ClientModel as ClientModel
from ._identity import api_key_of, infer_provider, model_of
from ._identity import client_model as client_model
from ._identity import describe_client as describe_client
from ._identity import resolve_model_alias as resolve_model_alias
from ._identity import takes_model_argument as takes_model_argument
from ._lookup import loaded_class as loaded_class
from ._lookup import loaded_module as loaded_module
from ._sdk_retries import switch_off_sdk_retries as switch_off_sdk_retries
from ._usage_tap import CURRENT_SLOT as CURRENT_SLOT
from ._usage_tap import ProviderUsage, attach_usage_tap, capture_provider_usage
from ._usage_tap import UsageSlot as UsageSlot
from ._usage_tap import anext_in_slot as anext_in_slot
from ._usage_tap import new_usage_slot as new_usage_slot
from ._usage_tap import read_timed_out as read_timed_out
from ._usage_tap import report_provider_usage as report_provider_usage

# The public names. The others above are for the library's own stages (imported from here, so
# that they name the package, not its modules), and may change in any release.
__all__ = [
    "ProviderUsage",
    "api_key_of",
    "attach_usage_tap",
    "capture_provider_usage",
    "infer_provider",
    "innermost",
    "model_of",
    "provider_arguments",
]
