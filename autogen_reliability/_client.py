"""``ReliableChatCompletionClient``: the wrapped model client at the centre of the library.

It is a drop-in AutoGen ``ChatCompletionClient``: every member behaves as the
inner client's does unless a policy says otherwise. Each call becomes a
:class:`~autogen_reliability._pipeline.Request` that runs through the
:class:`~autogen_reliability._pipeline.Pipeline`; this module only assembles the
pipeline from the options and keeps the wrapper's own usage counters. It holds
no policy logic.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Self, TypedDict, TypeVar, cast

from autogen_core import CancellationToken, Component, ComponentLoader, ComponentModel
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelCapabilities,  # deprecated by AutoGen, still part of the interface
    ModelInfo,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel, Field, ValidationError
from typing_extensions import Unpack

from ._config import default_recorder
from ._config import settings as accounting_settings
from ._context import Attribution, resolve_attribution
from ._errors import ComponentConfig, ConfigurationError, validation_problems
from ._pipeline import AttemptEvent, AttemptObserver, Call, Pipeline, Request, StreamItem
from ._redaction import log_failure, redact, remember_secret
from .accounting._price_table import PricingTable
from .accounting._recorder import UsageRecorder
from .budget._policy import BudgetPolicy
from .providers import (
    api_key_of,
    attach_usage_tap,
    inner_client,
    innermost,
    response_format_of,
    switch_off_sdk_retries,
)
from .retry._budget import budget_for
from .retry._circuit import CircuitBreakerPolicy, breaker_for
from .retry._policy import RetryObserver, RetryPolicy
from .validation._policy import ValidationPolicy
from .validation._sanitize_policy import SanitizePolicy

if TYPE_CHECKING:
    # The stages' modules load when the first wrapper is made (in the functions below), not with reliable.
    from .accounting._layer import AccountingLayer
    from .budget._layer import BudgetLayer
    from .retry._layer import FallbackLayer, RetryLayer

__all__ = ["ReliableChatCompletionClient", "ReliableChatCompletionClientConfig", "ReliableOptions", "check_options"]


class ReliableOptions(TypedDict, total=False):
    """The options of :class:`ReliableChatCompletionClient`, also taken by :func:`~autogen_reliability.reliable`."""

    project: str | None
    agent: str | None
    tags: Mapping[str, str] | None
    retry: RetryPolicy | None
    circuit: CircuitBreakerPolicy | None
    fallbacks: Sequence[ChatCompletionClient]
    validation: ValidationPolicy | None
    sanitize: SanitizePolicy | None
    budget: BudgetPolicy | None
    track_usage: bool
    recorder: UsageRecorder | None
    pricing: PricingTable | None
    on_attempt: AttemptObserver | Sequence[AttemptObserver] | None
    on_retry: RetryObserver | Sequence[RetryObserver] | None


_OPTION_NAMES = frozenset(ReliableOptions.__annotations__)

logger = logging.getLogger("autogen_reliability")
# Guards the swap of a wrapper's added observers (rare: a probe or an exporter starting); one for all wrappers.
_observers_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class _Settings:
    """The options, validated and with defaults filled in."""

    attribution: Attribution
    retry: RetryPolicy | None
    circuit: CircuitBreakerPolicy | None
    fallbacks: tuple[ChatCompletionClient, ...]
    validation: ValidationPolicy | None
    sanitize: SanitizePolicy | None
    budget: BudgetPolicy | None
    track_usage: bool
    recorder: UsageRecorder | None
    pricing: PricingTable | None
    on_attempt: tuple[AttemptObserver, ...]
    on_retry: tuple[RetryObserver, ...]


def check_options(options: Mapping[str, Any], client: ChatCompletionClient | None = None) -> _Settings:
    """Validates wrapper options as the constructor does, and fills in the defaults.

    Args:
        options: The options, as the constructor takes them.
        client: The primary client, when known: no fallback may be the same provider client.

    Raises:
        ConfigurationError: an unknown option, or an invalid value.
    """
    unknown = options.keys() - _OPTION_NAMES
    if unknown:
        raise ConfigurationError(f"unknown option(s) {sorted(unknown)}; valid options: {sorted(_OPTION_NAMES)}")
    retry = options.get("retry", _DEFAULT_RETRY)
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise ConfigurationError(f"retry must be a RetryPolicy or None (no retries), got {type(retry).__name__}")
    circuit = options.get("circuit", _DEFAULT_CIRCUIT)
    if circuit is not None and not isinstance(circuit, CircuitBreakerPolicy):
        raise ConfigurationError(
            f"circuit must be a CircuitBreakerPolicy or None (no circuit breaker), got {type(circuit).__name__}"
        )
    validation = options.get("validation")
    if validation is not None and not isinstance(validation, ValidationPolicy):
        raise ConfigurationError(f"validation must be a ValidationPolicy or None, got {type(validation).__name__}")
    sanitize = options.get("sanitize", _DEFAULT_SANITIZE)
    if sanitize is not None and not isinstance(sanitize, SanitizePolicy):
        raise ConfigurationError(
            f"sanitize must be a SanitizePolicy or None (no sanitising), got {type(sanitize).__name__}"
        )
    track_usage = options.get("track_usage", True)
    if not isinstance(track_usage, bool):
        raise ConfigurationError(f"track_usage must be True or False, got {track_usage!r}")
    budget, recorder, pricing = _usage_options(options, track_usage)
    fallbacks = _fallbacks(options.get("fallbacks"), client)
    tags = options.get("tags")
    return _Settings(
        attribution=Attribution(
            project=options.get("project"), agent=options.get("agent"), tags={} if tags is None else tags
        ),
        retry=retry,
        circuit=circuit,
        fallbacks=fallbacks,
        validation=validation,
        sanitize=sanitize,
        budget=budget,
        track_usage=track_usage,
        recorder=recorder,
        pricing=pricing,
        on_attempt=_hooks("on_attempt", options.get("on_attempt")),
        on_retry=_hooks("on_retry", options.get("on_retry")),
    )


def _usage_options(
    options: Mapping[str, Any], track_usage: bool
) -> tuple[BudgetPolicy | None, UsageRecorder | None, PricingTable | None]:
    """The options that act on usage rows, checked: ``budget`` (or the process default), ``recorder``, ``pricing``."""
    if "budget" in options:
        budget = options["budget"]
        if budget is not None and not isinstance(budget, BudgetPolicy):
            raise ConfigurationError(f"budget must be a BudgetPolicy or None (no budget), got {type(budget).__name__}")
        if budget is not None and not track_usage:
            raise ConfigurationError(
                "budget needs track_usage=True: the calls of a wrapper that records nothing would never count"
            )
    else:
        # The process default applies to wrappers that record their calls; one that records nothing could not count.
        budget = accounting_settings().budget if track_usage else None
    recorder = options.get("recorder")
    if recorder is not None and not isinstance(recorder, UsageRecorder):
        raise ConfigurationError(f"recorder must be a UsageRecorder, got {type(recorder).__name__}")
    pricing = options.get("pricing")
    if pricing is not None and not isinstance(pricing, PricingTable):
        raise ConfigurationError(f"pricing must be a PricingTable, got {type(pricing).__name__}")
    for name, given in (("recorder", recorder), ("pricing", pricing)):
        if given is not None and not track_usage:
            raise ConfigurationError(
                f"{name}= needs track_usage=True: a wrapper that records nothing would never use it"
            )
    return budget, recorder, pricing


def _fallbacks(fallbacks: object, client: ChatCompletionClient | None) -> tuple[ChatCompletionClient, ...]:
    if fallbacks is None:
        return ()
    # A string is a Sequence too, and "" an empty one: refused as "abc" is, not taken for "no fallbacks".
    if isinstance(fallbacks, ChatCompletionClient | str) or not isinstance(fallbacks, Sequence):
        raise ConfigurationError(f"fallbacks must be a list of ChatCompletionClient, got {type(fallbacks).__name__}")
    # A fallback that is the primary (or an earlier fallback) underneath shares its breaker and budget:
    # it could only fail the same way, a second time.
    primary = innermost(client) if client is not None else None
    providers: list[ChatCompletionClient] = []
    for index, fallback in enumerate(fallbacks):
        if not isinstance(fallback, ChatCompletionClient):
            raise ConfigurationError(f"fallbacks must be ChatCompletionClient objects, got {type(fallback).__name__}")
        provider = innermost(fallback)
        if provider is primary:
            raise ConfigurationError(f"fallbacks[{index}] is the primary client; a fallback must be another client")
        for earlier, known in enumerate(providers):
            if provider is known:
                raise ConfigurationError(
                    f"fallbacks[{index}] repeats fallbacks[{earlier}]; each fallback must be another client"
                )
        providers.append(provider)
    return tuple(fallbacks)


def _own(options: Mapping[str, Any]) -> ReliableOptions:
    """``options`` with the dicts and lists in them (``tags``, ``fallbacks``, hooks) copied.

    A wrapper keeps its options to be re-wrapped with (``with_options()``, ``reliable(agent)``): holding the
    caller's own ``tags`` dict, reused and changed for the next wrapper, it would re-wrap with those.
    """
    own: dict[str, Any] = {}
    for name, value in options.items():
        if isinstance(value, Mapping):
            own[name] = dict(value)
        elif isinstance(value, list):
            own[name] = list(value)
        else:
            own[name] = value
    return cast(ReliableOptions, own)


_DEFAULT_RETRY = RetryPolicy()
_DEFAULT_CIRCUIT = CircuitBreakerPolicy()
_DEFAULT_SANITIZE = SanitizePolicy()
_Hook = TypeVar("_Hook", bound=Callable[..., None])


def _hooks(name: str, hooks: _Hook | Sequence[_Hook] | None) -> tuple[_Hook, ...]:
    if hooks is None:
        return ()
    # A string or a mapping is iterable too, and an empty one would pass for "no hooks".
    if not callable(hooks) and (isinstance(hooks, str | Mapping) or not isinstance(hooks, Iterable)):
        raise ConfigurationError(f"{name} takes callables (one or a list), got {type(hooks).__name__}")
    found = (hooks,) if callable(hooks) else tuple(hooks)
    for hook in found:
        if not callable(hook):
            raise ConfigurationError(f"{name} takes callables (one or a list), got {type(hook).__name__}")
    return found


def _pipeline(
    client: ChatCompletionClient,
    settings: _Settings,
    observers: Sequence[AttemptObserver],
    *,
    primary: bool,
    accounting: AccountingLayer | None = None,
) -> Pipeline:
    """The pipeline of ``client``: the primary's has every layer, a fallback's only those of a provider client.

    ``accounting``: a fallback's, the primary's accounting layer (which records the fallback's attempts).
    """
    from .retry._layer import CircuitLayer  # noqa: PLC0415 - the stages load with the first wrapper
    from .validation._layer import SanitizeLayer, ValidationLayer  # noqa: PLC0415

    remember_secret(api_key_of(client))  # a provider may echo it in an error we store, log or raise
    if settings.track_usage:
        attach_usage_tap(innermost(client))
    # Off whether or not we retry: an SDK retry is a request no row, budget or breaker would see.
    switch_off_sdk_retries(client)
    # The layers a call goes through, outermost first. docs/architecture.md shows this list as a table,
    # and tests/test_layering.py keeps the two the same. A stage that is off has no layer.
    if primary and settings.track_usage:
        accounting = _accounting(client, settings)
    json_answers = primary and _answers_in_json(client, settings)
    layers = [
        _budget(settings, settings.budget) if primary and settings.budget is not None else None,
        accounting if primary else None,
        SanitizeLayer(settings.sanitize, json_answers=json_answers)
        if primary and settings.sanitize is not None
        else None,
        ValidationLayer(settings.validation, json_answers=json_answers) if primary else None,
        _fallback(settings, observers, accounting) if primary and settings.fallbacks else None,
        _retry(client, settings.retry, settings.on_retry) if settings.retry is not None else None,
        CircuitLayer(breaker_for(client, settings.circuit)) if settings.circuit is not None else None,
    ]
    wrapped = _is_wrapped(client)
    return Pipeline(
        client,
        [layer for layer in layers if layer is not None],
        observers,
        on_wrapper=wrapped,
        # A wrapped client that records nothing records its provider attempts through our accounting.
        lender=accounting if wrapped and accounting is not None and not _records_itself(client) else None,
        borrows=primary and not settings.track_usage,
        primary=primary,
        # Its observers still read the provider's own usage: tapped once something observes the process.
        untapped=not settings.track_usage and not wrapped,
    )


def _answers_in_json(client: ChatCompletionClient, settings: _Settings) -> bool:
    """Whether every answer is asked for as JSON: validated against a schema (sent as a ``response_format``), or
    by a client built with a JSON ``response_format`` (``OpenAIChatCompletionClient(response_format=...)``)."""
    from .validation._layer import is_json_format  # noqa: PLC0415

    if settings.validation is not None and settings.validation.compiled_schema is not None:
        return True
    return is_json_format(response_format_of(client))


def _accounting(client: ChatCompletionClient, settings: _Settings) -> AccountingLayer:
    from .accounting._layer import AccountingLayer  # noqa: PLC0415

    defaults = accounting_settings()
    recorded, lent = _judged((client, *settings.fallbacks))
    return AccountingLayer(
        settings.recorder or default_recorder(),
        settings.pricing or defaults.pricing,
        capture_content=defaults.capture_content,
        content_limit=defaults.content_limit,
        recorded_elsewhere=recorded,
        lent_to=lent,
    )


def _judged(
    clients: Iterable[ChatCompletionClient],
) -> tuple[tuple[ChatCompletionClient, ...], tuple[ChatCompletionClient, ...]]:
    """The wrapped clients among ``clients`` that record usage, and those that record none, with those inside
    each of the latter (its own client and fallbacks, judged alike): a call of one that records none borrows
    our accounting, which must know every wrapped client an attempt of such a call may be made on."""
    recorded: list[ChatCompletionClient] = []
    lent: list[ChatCompletionClient] = []
    pending = list(clients)
    while pending:
        each = pending.pop()
        wrapper = next(_wrappers_in(each), None)
        if wrapper is None or any(each is seen for seen in (*recorded, *lent)):
            continue
        if wrapper.recorder is not None:
            recorded.append(each)
        else:
            lent.append(each)
            pending += (wrapper.inner, *wrapper.fallbacks)
    return tuple(recorded), tuple(lent)


def _wrappers_in(client: ChatCompletionClient) -> Iterator[ReliableChatCompletionClient]:
    """The wrapped clients ``client`` is or holds, outermost first (through AutoGen's cache, say)."""
    for _ in range(8):
        if isinstance(client, ReliableChatCompletionClient):
            yield client
        inner = inner_client(client)
        if inner is None:
            return
        client = inner


def _records_itself(client: ChatCompletionClient) -> bool:
    """Whether ``client`` is a wrapped client that records usage (or AutoGen's cache, say, over one).

    Its provider attempts have their rows already: the attempt of an outer wrapper on it is not one more.
    Judged by its outermost wrapper: one that records nothing borrows ours, whatever it wraps (see _judged).
    """
    wrapper = next(_wrappers_in(client), None)
    return wrapper is not None and wrapper.recorder is not None


def _is_wrapped(client: ChatCompletionClient) -> bool:
    """Whether ``client`` is a wrapped client (or wraps one, under AutoGen's cache, say), not a provider client.

    Its provider attempts are attempts of its own calls: an outer wrapper's attempt on it is not one more.
    """
    return next(_wrappers_in(client), None) is not None


def _budget(settings: _Settings, policy: BudgetPolicy) -> BudgetLayer:
    from .budget._layer import BudgetLayer  # noqa: PLC0415
    from .budget._tracker import tracker_for  # noqa: PLC0415 - SQLAlchemy: loaded for a wrapper with a budget

    if settings.recorder is not None:
        return BudgetLayer(tracker_for(policy, settings.recorder), policy.on_alert, policy.clock)
    # The process's recorder makes its store on its own thread: the database is the one configured.
    tracker = tracker_for(policy, default_recorder(), accounting_settings().db_url)
    return BudgetLayer(tracker, policy.on_alert, policy.clock)


def _fallback(
    settings: _Settings, observers: Sequence[AttemptObserver], accounting: AccountingLayer | None
) -> FallbackLayer:
    from .retry._layer import FallbackLayer  # noqa: PLC0415

    fallbacks = [
        _pipeline(fallback, settings, observers, primary=False, accounting=accounting)
        for fallback in settings.fallbacks
    ]
    retry_on = settings.retry.retry_on if settings.retry is not None else frozenset()
    return FallbackLayer(fallbacks, retry_on)


def _retry(client: ChatCompletionClient, policy: RetryPolicy, on_retry: Sequence[RetryObserver]) -> RetryLayer:
    from .retry._layer import RetryLayer  # noqa: PLC0415

    budget = budget_for(client, policy.budget, policy.clock) if policy.budget is not None else None
    return RetryLayer(policy, budget, on_retry)


class ReliableChatCompletionClientConfig(ComponentConfig):
    """Declarative configuration of :class:`ReliableChatCompletionClient`.

    ``retry``, ``circuit`` and ``sanitize`` hold a policy's ``to_config()`` dict,
    ``"off"``, or nothing (the default policy); ``validation`` a policy's dict or
    nothing; ``budget`` the wrapper's own budget, ``"off"`` (``budget=None``), or
    nothing: the default of the process that loads it (see ``configure``). Hooks,
    recorders and price tables are objects of the running process, not
    configuration, and are not kept: a loaded client records to the process
    default.
    """

    client: ComponentModel
    project: str | None = None
    agent: str | None = None
    tags: dict[str, str] | None = None
    retry: dict[str, Any] | Literal["off"] | None = None
    circuit: dict[str, Any] | Literal["off"] | None = None
    fallbacks: list[ComponentModel] = Field(default_factory=list)
    validation: dict[str, Any] | None = None
    sanitize: dict[str, Any] | Literal["off"] | None = None
    budget: dict[str, Any] | Literal["off"] | None = None
    track_usage: bool = True


class ReliableChatCompletionClient(ChatCompletionClient, Component[ReliableChatCompletionClientConfig]):
    """Wraps an AutoGen model client and makes each call observable and attributable.

    A drop-in for the client it wraps: agents, teams and ``dump_component()`` see
    the same interface, the same ``model_info`` and the same results.

    Args:
        client: The model client to wrap (OpenAI, Azure, Anthropic, Ollama, ...).
        project: Default project for the usage of this client.
        agent: Default agent name (``reliable(agent)`` binds the agent's name).
        tags: Default tags, merged under the tags of any active ``usage_scope``.
        retry: The :class:`~autogen_reliability.RetryPolicy` (default: ``RetryPolicy()``);
            ``None`` turns retrying off.
        circuit: The :class:`~autogen_reliability.CircuitBreakerPolicy` of each client
            (default: ``CircuitBreakerPolicy()``); ``None`` turns it off.
        fallbacks: Clients tried in order when the one before gave up.
        validation: The :class:`~autogen_reliability.ValidationPolicy`. When omitted,
            only answers to AutoGen's ``json_output=<model>`` are validated.
        sanitize: The :class:`~autogen_reliability.SanitizePolicy` (default: on);
            ``None`` turns sanitising off.
        budget: The :class:`~autogen_reliability.BudgetPolicy`: calls over it are refused
            before any request (default: the one given to :func:`~autogen_reliability.configure`,
            if any); ``None`` turns budgets off for this wrapper.
        track_usage: Record a usage row per provider attempt (default: True). With False,
            ``budget``, ``recorder`` and ``pricing`` are refused: nothing would use them.
        recorder: The :class:`~autogen_reliability.accounting.UsageRecorder` to record to
            (default: the process's, see :func:`~autogen_reliability.configure`).
        pricing: The :class:`~autogen_reliability.accounting.PricingTable` (default: the process's).
        on_attempt: Called with an :class:`~autogen_reliability.AttemptEvent` at the
            end of every provider attempt (one callable or several).
        on_retry: Called with a :class:`~autogen_reliability.retry.RetryEvent` before each
            retry. Hooks are code, not configuration: ``dump_component()`` leaves them out.

    Raises:
        ConfigurationError: an option is invalid.

    Example:
        >>> from autogen_ext.models.openai import OpenAIChatCompletionClient
        >>> inner = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-...")
        >>> client = ReliableChatCompletionClient(inner, project="acme-support")
    """

    component_type = "model"
    component_config_schema = ReliableChatCompletionClientConfig
    component_provider_override = "autogen_reliability.ReliableChatCompletionClient"

    def __init__(self, client: ChatCompletionClient, **options: Unpack[ReliableOptions]) -> None:
        if not isinstance(client, ChatCompletionClient):
            raise ConfigurationError(
                f"client must be an autogen_core.models.ChatCompletionClient, got {type(client).__name__}"
            )
        settings = check_options(options, client)
        self._inner = client
        self._options = _own(options)
        self._settings = settings
        self._total_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._actual_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._observers: tuple[AttemptObserver, ...] = ()  # added after construction; replaced, never mutated
        observers = (self._count_usage, *settings.on_attempt, self._notify_observers)
        self._pipeline = _pipeline(client, settings, observers, primary=True)

    @property
    def inner(self) -> ChatCompletionClient:
        """The wrapped client."""
        return self._inner

    @property
    def attribution(self) -> Attribution:
        """The attribution defaults bound on this wrapper."""
        return self._settings.attribution

    @property
    def fallbacks(self) -> tuple[ChatCompletionClient, ...]:
        """The clients tried in order when the one before gave up (empty: none)."""
        return self._settings.fallbacks

    @property
    def circuit(self) -> CircuitBreakerPolicy | None:
        """The circuit breaker policy of this wrapper's clients (the default one when not given); None: off."""
        return self._settings.circuit

    @property
    def recorder(self) -> UsageRecorder | None:
        """The recorder this wrapper's usage rows go to (None with ``track_usage=False``).

        The one chosen when the wrapper was built: the ``recorder=`` option, else the
        process's recorder of that moment.
        """
        from .accounting._layer import AccountingLayer  # noqa: PLC0415 - loaded by the wrapper that records

        for layer in self._pipeline.layers:
            if isinstance(layer, AccountingLayer):
                return layer.recorder
        return None

    def add_attempt_observer(self, observer: AttemptObserver) -> None:
        """Call ``observer`` at the end of every provider attempt made through this wrapper from now on.

        Like ``on_attempt``, but on a wrapper that exists already (a health probe, a
        metrics exporter): it sees the attempts of the primary client and of every
        fallback, each with its :class:`~autogen_reliability.AttemptEvent` (whose
        ``client`` says which). It is called on the event loop, must be quick, and an
        exception it raises is logged, never passed to the caller. Observers added so
        are not options: :meth:`with_options` and ``dump_component()`` leave them out.
        Adding one that is there already does nothing.
        """
        if not callable(observer):
            raise ConfigurationError(f"an attempt observer must be callable, got {type(observer).__name__}")
        with _observers_lock:
            if observer not in self._observers:
                self._observers = (*self._observers, observer)

    def remove_attempt_observer(self, observer: AttemptObserver) -> None:
        """Stop calling ``observer``, added with :meth:`add_attempt_observer`; one not added is ignored."""
        with _observers_lock:
            self._observers = tuple(known for known in self._observers if known != observer)

    @property
    def options(self) -> ReliableOptions:
        """The options this wrapper was built with (a copy)."""
        return _own(self._options)

    def with_options(self, **changes: Unpack[ReliableOptions]) -> ReliableChatCompletionClient:
        """A new wrapper around the same inner client, with ``changes`` laid over these options."""
        merged: ReliableOptions = {**self._options, **changes}
        return type(self)(self._inner, **merged)

    def __repr__(self) -> str:
        options = ", ".join(f"{name}={value!r}" for name, value in self._options.items())
        return f"{type(self).__name__}({type(self._inner).__name__}(...){', ' if options else ''}{options})"

    # -- the interface ---------------------------------------------------------------

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],  # the interface's exact signature
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        """Create one response through the pipeline; see ``ChatCompletionClient.create``."""
        request = Request(
            Call(resolve_attribution(self._settings.attribution), streamed=False, extra_create_args=extra_create_args),
            messages,
            tools,
            tool_choice,
            json_output,
            extra_create_args,
            cancellation_token,
        )
        return await self._pipeline.create(request)

    def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[StreamItem, None]:
        """Stream one response through the pipeline; see ``ChatCompletionClient.create_stream``.

        Extra keyword arguments (e.g. the OpenAI client's ``include_usage``) are
        passed to the inner client, and to each fallback; a fallback of another
        kind is not sent those only OpenAI clients take. Streams to OpenAI clients
        ask for usage unless the caller said otherwise, so streamed calls are
        counted like plain ones.
        """
        request = Request(
            Call(resolve_attribution(self._settings.attribution), streamed=True, extra_create_args=extra_create_args),
            messages,
            tools,
            tool_choice,
            json_output,
            extra_create_args,
            cancellation_token,
            kwargs,
        )
        return self._pipeline.create_stream(request)

    async def close(self) -> None:
        """Close the inner client and the fallbacks.

        Every one is closed even if another's ``close()`` raises; the first error is raised then.
        """
        # The fallbacks too: those of a wrapper made by load_component() exist nowhere else.
        failure: BaseException | None = None
        for client in (self._inner, *self._settings.fallbacks):
            try:
                await client.close()
            except Exception as error:
                failure = failure or error
        if failure is not None:
            raise failure

    def actual_usage(self) -> RequestUsage:
        """Tokens of the provider attempts made through this wrapper, excluding results served from a cache."""
        return RequestUsage(self._actual_usage.prompt_tokens, self._actual_usage.completion_tokens)

    def total_usage(self) -> RequestUsage:
        """Tokens of every result that passed through this wrapper, cached ones included."""
        return RequestUsage(self._total_usage.prompt_tokens, self._total_usage.completion_tokens)

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """The inner client's token count."""
        return self._inner.count_tokens(messages, tools=tools)

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """The inner client's remaining-token count."""
        return self._inner.remaining_tokens(messages, tools=tools)

    @property
    def capabilities(self) -> ModelCapabilities:
        """Deprecated by AutoGen; use :attr:`model_info`."""
        warnings.warn("capabilities is deprecated, use model_info instead", DeprecationWarning, stacklevel=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return self._inner.capabilities

    @property
    def model_info(self) -> ModelInfo:
        """The inner client's ``model_info``, unchanged (agents branch on it)."""
        return self._inner.model_info

    # -- internals ---------------------------------------------------------------------

    def _notify_observers(self, event: AttemptEvent) -> None:
        # A snapshot: an observer added or removed meanwhile (from another thread) takes effect next time.
        for observer in self._observers:
            try:
                observer(event)
            except Exception:
                # Watching a call must never break it (as for the pipeline's own observers).
                log_failure(logger, "attempt observer %r failed", observer)

    def _count_usage(self, event: AttemptEvent) -> None:
        result = event.result
        if result is None:
            return
        self._total_usage = RequestUsage(
            self._total_usage.prompt_tokens + result.usage.prompt_tokens,
            self._total_usage.completion_tokens + result.usage.completion_tokens,
        )
        if not result.cached:
            self._actual_usage = RequestUsage(
                self._actual_usage.prompt_tokens + result.usage.prompt_tokens,
                self._actual_usage.completion_tokens + result.usage.completion_tokens,
            )

    # -- component -----------------------------------------------------------------

    def _to_config(self) -> ReliableChatCompletionClientConfig:
        settings = self._settings
        tags = settings.attribution.tags
        return ReliableChatCompletionClientConfig(
            client=self._inner.dump_component(),
            project=settings.attribution.project,
            agent=settings.attribution.agent,
            tags=dict(tags) if tags else None,
            retry=settings.retry.to_config() if settings.retry is not None else "off",
            circuit=settings.circuit.to_config() if settings.circuit is not None else "off",
            fallbacks=[fallback.dump_component() for fallback in settings.fallbacks],
            validation=settings.validation.to_config() if settings.validation is not None else None,
            sanitize=settings.sanitize.to_config() if settings.sanitize is not None else "off",
            budget=self._budget_config(),
            track_usage=settings.track_usage,
        )

    def _budget_config(self) -> dict[str, Any] | Literal["off"] | None:
        if "budget" not in self._options:
            return None  # the process default, which the loading process may set otherwise
        budget = self._settings.budget
        return budget.to_config() if budget is not None else "off"

    @classmethod
    def _from_config(cls, config: ReliableChatCompletionClientConfig) -> Self:
        options: ReliableOptions = {}
        if config.project is not None:
            options["project"] = config.project
        if config.agent is not None:
            options["agent"] = config.agent
        if config.tags:
            options["tags"] = config.tags
        if config.retry is not None:
            options["retry"] = None if config.retry == "off" else RetryPolicy.from_config(config.retry)
        if config.circuit is not None:
            options["circuit"] = None if config.circuit == "off" else CircuitBreakerPolicy.from_config(config.circuit)
        if config.fallbacks:
            options["fallbacks"] = [
                _load_client(f"fallbacks.{index}", model) for index, model in enumerate(config.fallbacks)
            ]
        if config.validation is not None:
            options["validation"] = ValidationPolicy.from_config(config.validation)
        if config.sanitize is not None:
            options["sanitize"] = None if config.sanitize == "off" else SanitizePolicy.from_config(config.sanitize)
        if config.budget is not None:
            options["budget"] = None if config.budget == "off" else BudgetPolicy.from_config(config.budget)
        if not config.track_usage:
            options["track_usage"] = False
        return cls(_load_client("client", config.client), **options)


def _load_client(where: str, model: ComponentModel) -> ChatCompletionClient:
    """The client ``model`` describes; one that cannot be loaded as a model client is refused as ours is, naming
    ``where`` (AutoGen's loader says "Expected type does not match", or "No module named ...", and not where).

    Not with the provider client's pydantic ``ValidationError``: its text quotes the config it was given, and so
    the API key a hand-written config holds in clear.
    """
    invalid = "a ReliableChatCompletionClient config is invalid"
    try:
        # Any component, checked here: ChatCompletionClient's loader refuses another kind without naming it.
        loaded = ComponentLoader.load_component(model)
    except ValidationError as error:
        # Not chained: the ValidationError's text repeats the values.
        raise ConfigurationError(f"{invalid}: {validation_problems(error, f'{where}.config')}") from None
    except ConfigurationError:
        raise  # ours (a wrapped client's), which says what
    except (ImportError, AttributeError, TypeError, ValueError) as error:
        raise ConfigurationError(f"{invalid}: {where}: cannot load {model.provider}: {redact(str(error))}") from error
    if not isinstance(loaded, ChatCompletionClient):
        raise ConfigurationError(
            f"{invalid}: {where}: {model.provider} is a {type(loaded).__name__}, not a model client"
        )
    return loaded
