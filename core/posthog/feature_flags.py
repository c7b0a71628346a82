"""Feature flags on the client: local first, ``/flags`` when needed, flag events (spec §5 to §7).

Mixed into :class:`posthog.Client`. The flag machinery (definitions, evaluator,
HTTP) is imported on first use so ``import posthog`` stays light.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from posthog import contexts
from posthog._log import logger

if TYPE_CHECKING:
    from posthog.flag_types import (
        FeatureFlag,
        FeatureFlagEvaluationRuntime,
        FeatureFlagResult,
        FlagsAndPayloads,
        FlagsResponse,
    )
    from posthog.flags.called import CalledTracker, FlagCall
    from posthog.flags.local import FlagDefinitions, LocalResult
    from posthog.flags.poller import DefinitionsLoader
    from posthog.flags.snapshot import Evaluated, FeatureFlagEvaluations

Props = Mapping[str, Any]


def _deprecated(name: str) -> None:
    warnings.warn(
        f"{name} is deprecated; use evaluate_flags() and the returned snapshot instead",
        DeprecationWarning,
        stacklevel=3,
    )


class FeatureFlagsMixin:
    """The flag half of the client; relies on the client's settings and ``capture``."""

    api_key: str
    host: str
    disabled: bool
    debug: bool
    disable_geoip: bool
    poll_interval: float
    enable_local_evaluation: bool
    flag_definition_cache_provider: Any
    feature_flags_request_timeout_seconds: float
    feature_flags_request_max_retries: int
    secret_key: str | None
    capture: Callable[..., str | None]
    _loader_: DefinitionsLoader | None = None
    _called_: CalledTracker | None = None
    _minimal_events: bool = False

    # ------------------------------------------------------------ definitions

    @property
    def _loader(self) -> DefinitionsLoader:
        loader = self._loader_
        if loader is None:
            from posthog.flags.poller import DefinitionsLoader

            loader = self._loader_ = DefinitionsLoader(
                host=self.host,
                api_key=self.api_key,
                secret_key=lambda: self.secret_key,
                poll_interval=self.poll_interval,
                provider=self.flag_definition_cache_provider,
                debug=lambda: self.debug,
                on_install=self._on_definitions,
            )
        return loader

    def _on_definitions(self, definitions: FlagDefinitions) -> None:
        self._minimal_events = definitions.minimal_flag_called_events

    @property
    def _definitions(self) -> FlagDefinitions | None:
        return self._loader_.definitions if self._loader_ is not None else None

    @property
    def feature_flags(self) -> list[dict[str, Any]] | None:
        """The loaded flag definitions, or ``None`` before the first successful load."""
        found = self._definitions
        return list(found.flags) if found is not None else None

    @feature_flags.setter
    def feature_flags(self, flags: list[dict[str, Any]] | None) -> None:
        from posthog.flags.local import FlagDefinitions

        current = self._definitions
        data = {
            "flags": list(flags or []),
            "group_type_mapping": dict(current.group_type_mapping) if current else {},
            "cohorts": dict(current.cohorts) if current else {},
        }
        self._loader._publish(FlagDefinitions.compile(data))

    @property
    def feature_flags_by_key(self) -> dict[str, dict[str, Any]]:
        found = self._definitions
        return dict(found.by_key) if found is not None else {}

    @property
    def group_type_mapping(self) -> dict[str, str]:
        found = self._definitions
        return dict(found.group_type_mapping) if found is not None else {}

    @property
    def cohorts(self) -> dict[str, Any]:
        found = self._definitions
        return dict(found.cohorts) if found is not None else {}

    def load_feature_flags(self) -> None:
        """Load definitions now (through the cache provider) and start the poller."""
        if self.disabled:
            self.feature_flags = []
            return
        if not self.secret_key:
            logger.warning("local evaluation needs a secret_key (personal API key); skipped")
            self.feature_flags = []
            return
        loader = self._loader
        loader.load()
        if self.enable_local_evaluation and not getattr(self, "_joined", False):
            loader.start()

    def feature_flag_definitions(self) -> list[dict[str, Any]] | None:
        return self.feature_flags

    def _local(self) -> FlagDefinitions | None:
        found = self._definitions
        if found is None and self.secret_key and not self.disabled:
            try:
                self.load_feature_flags()
            except Exception as exc:
                logger.error("loading feature flags failed: %s", exc)
                if self.debug:
                    raise
            found = self._definitions
        return found

    def get_feature_flag_evaluation_runtime(self, key: str) -> FeatureFlagEvaluationRuntime | None:
        from posthog.flag_types import FeatureFlagEvaluationRuntime

        found = self._definitions
        flag = found.by_key.get(key) if found is not None else None
        if flag is None:
            return None
        try:
            return FeatureFlagEvaluationRuntime(flag.get("evaluation_runtime") or "all")
        except ValueError:
            return FeatureFlagEvaluationRuntime.ALL

    def get_feature_flag_keys_by_evaluation_runtime(self, runtime: Any) -> list[str]:
        from posthog.flag_types import FeatureFlagEvaluationRuntime

        wanted = FeatureFlagEvaluationRuntime(runtime)
        found = self._definitions
        keys = []
        for key in found.by_key if found is not None else ():
            have = self.get_feature_flag_evaluation_runtime(key)
            if wanted is FeatureFlagEvaluationRuntime.ALL or have in (
                wanted, FeatureFlagEvaluationRuntime.ALL
            ):
                keys.append(key)
        return keys

    # ------------------------------------------------------------ remote

    def _remote(
        self,
        distinct_id: Any,
        *,
        groups: Props | None,
        person_properties: Props | None,
        group_properties: Props | None,
        disable_geoip: bool | None,
        device_id: str | None,
        flag_keys: list[str] | None,
    ) -> FlagsResponse:
        from posthog.flags.remote import flags_body, request_flags

        body = flags_body(
            distinct_id,
            groups=groups,
            person_properties=person_properties,
            group_properties=group_properties,
            geoip_disable=self.disable_geoip if disable_geoip is None else disable_geoip,
            device_id=device_id,
            flag_keys=flag_keys,
        )
        response = request_flags(
            host=self.host,
            api_key=self.api_key,
            body=body,
            timeout=self.feature_flags_request_timeout_seconds,
            max_retries=self.feature_flags_request_max_retries,
        )
        self._minimal_events = bool(response.get("minimalFlagCalledEvents"))
        return response

    def _remote_or_empty(self, distinct_id: Any, **kwargs: Any) -> FlagsResponse:
        from posthog.flags.remote import empty_response

        if self.disabled:
            return empty_response()
        try:
            return self._remote(self._resolve_id(distinct_id), **kwargs)
        except Exception as exc:
            logger.warning("/flags request failed: %s", exc)
            return empty_response()

    @staticmethod
    def _resolve_id(distinct_id: Any) -> Any:
        if distinct_id is None:
            scope = contexts.current_scope()
            if scope is not None:
                return scope.resolve_distinct_id()
        return distinct_id

    @staticmethod
    def _resolve_device(device_id: str | None) -> str | None:
        if device_id is None:
            scope = contexts.current_scope()
            if scope is not None:
                found = scope.lookup("device_id")
                return str(found) if found is not None else None
        return device_id

    def get_flags_decision(
        self,
        distinct_id: Any = None,
        groups: Props | None = None,
        person_properties: Props | None = None,
        group_properties: Props | None = None,
        disable_geoip: bool | None = None,
        flag_keys_to_evaluate: list[str] | None = None,
        device_id: str | None = None,
    ) -> FlagsResponse:
        """The raw ``/flags`` answer; never raises (an empty answer on failure)."""
        return self._remote_or_empty(
            distinct_id,
            groups=groups,
            person_properties=person_properties,
            group_properties=group_properties,
            disable_geoip=disable_geoip,
            device_id=self._resolve_device(device_id),
            flag_keys=flag_keys_to_evaluate,
        )

    def get_feature_variants(self, distinct_id: Any, groups: Props | None = None,
                             person_properties: Props | None = None,
                             group_properties: Props | None = None,
                             disable_geoip: bool | None = None,
                             flag_keys_to_evaluate: list[str] | None = None,
                             device_id: str | None = None) -> dict[str, Any]:
        from posthog.flag_types import values_of

        return values_of(self.get_flags_decision(
            distinct_id, groups, person_properties, group_properties, disable_geoip,
            flag_keys_to_evaluate, device_id))

    def get_feature_payloads(self, distinct_id: Any, groups: Props | None = None,
                             person_properties: Props | None = None,
                             group_properties: Props | None = None,
                             disable_geoip: bool | None = None,
                             flag_keys_to_evaluate: list[str] | None = None,
                             device_id: str | None = None) -> dict[str, Any]:
        from posthog.flag_types import payloads_of

        return payloads_of(self.get_flags_decision(
            distinct_id, groups, person_properties, group_properties, disable_geoip,
            flag_keys_to_evaluate, device_id))

    def get_feature_flags_and_payloads(self, distinct_id: Any, groups: Props | None = None,
                                       person_properties: Props | None = None,
                                       group_properties: Props | None = None,
                                       disable_geoip: bool | None = None,
                                       flag_keys_to_evaluate: list[str] | None = None,
                                       device_id: str | None = None) -> FlagsAndPayloads:
        from posthog.flag_types import FlagsAndPayloads, payloads_of, values_of

        response = self.get_flags_decision(
            distinct_id, groups, person_properties, group_properties, disable_geoip,
            flag_keys_to_evaluate, device_id)
        return FlagsAndPayloads(featureFlags=values_of(response),
                                featureFlagPayloads=payloads_of(response))

    # ------------------------------------------------------------ one flag

    def _single(
        self,
        key: str,
        distinct_id: Any,
        *,
        groups: Props | None,
        person_properties: Props | None,
        group_properties: Props | None,
        only_evaluate_locally: bool,
        send_feature_flag_events: bool,
        disable_geoip: bool | None,
        device_id: str | None,
        match_value: Any = None,
    ) -> FeatureFlagResult | None:
        from posthog.flag_types import FeatureFlagResult, decode_payload
        from posthog.flags.called import FlagCall
        from posthog.flags.remote import error_code, group_properties_with_keys

        if self.disabled:
            return None
        distinct_id = self._resolve_id(distinct_id)
        if distinct_id is None:
            logger.warning("feature flag %r asked for without a distinct id", key)
            return None
        device_id = self._resolve_device(device_id)
        groups = dict(groups or {})
        keyed_groups = group_properties_with_keys(groups, group_properties)
        call = FlagCall(key=key, value=None, locally_evaluated=False)
        result: FeatureFlagResult | None = None
        definitions = self._local()
        local: LocalResult | None = None
        if definitions is not None and key in definitions.by_key:
            local = definitions.evaluate(
                key, str(distinct_id), groups=groups, person_properties=person_properties,
                group_properties=keyed_groups, device_id=device_id,
            )
        if local is not None and local.inconclusive is None:
            payload = local.payload_for(match_value) if match_value is not None else local.payload
            call.value = local.value
            call.locally_evaluated = True
            call.payload = decode_payload(payload)
            call.flag_id, call.version = local.flag_id, local.version
            call.has_experiment = local.has_experiment
            call.minimal = self._minimal_events
            value = match_value if match_value is not None else local.value
            result = FeatureFlagResult.from_value_and_payload(key, value, payload, local.reason)
        elif not only_evaluate_locally:
            try:
                response = self._remote(
                    distinct_id, groups=groups, person_properties=person_properties,
                    group_properties=keyed_groups, disable_geoip=disable_geoip,
                    device_id=device_id, flag_keys=[key],
                )
                record = response.get("flags", {}).get(key)
                self._describe_remote(call, response, record)
                result = FeatureFlagResult.from_flag_details(record, match_value)
            except Exception as exc:
                logger.warning("could not evaluate feature flag %r: %s", key, exc)
                call.errors.append(error_code(exc))
        else:
            if definitions is None:
                logger.warning("flag %r: definitions were never loaded; only local "
                               "evaluation was allowed", key)
            if local is not None:
                call.errors.append("local_evaluation_inconclusive")
        if send_feature_flag_events:
            self._flag_called(call, distinct_id, groups, disable_geoip)
        return result

    @staticmethod
    def _describe_remote(
        call: FlagCall, response: FlagsResponse, record: FeatureFlag | None
    ) -> None:
        from posthog.flag_types import decode_payload

        call.request_id = response.get("requestId")
        call.evaluated_at = response.get("evaluatedAt")
        call.minimal = bool(response.get("minimalFlagCalledEvents"))
        if response.get("errorsWhileComputingFlags"):
            call.errors.append("errors_while_computing_flags")
        if record is None:
            call.errors.append("flag_missing")
            return
        if record.failed:
            call.errors.append("evaluation_failed")
            return
        call.value = record.get_value()
        call.payload = decode_payload(record.payload)
        if record.reason is not None:
            call.reason = record.reason.description
        meta = record.metadata
        call.flag_id = getattr(meta, "id", None)
        call.version = getattr(meta, "version", None)
        call.has_experiment = getattr(meta, "has_experiment", None)

    def _flag_called(self, call: FlagCall, distinct_id: Any, groups: Props | None,
                     disable_geoip: bool | None) -> None:
        """Send ``$feature_flag_called`` unless this read was already reported."""
        from posthog.flags.called import MINIMAL_ALLOWLIST, CalledTracker

        if self.disabled:
            return
        tracker = self._called_
        if tracker is None:
            tracker = self._called_ = CalledTracker()
        if not tracker.first_time(distinct_id, call.key, call.value, groups):
            return
        self.capture(
            "$feature_flag_called",
            distinct_id=distinct_id,
            properties=call.properties(),
            groups=dict(groups) if groups else None,
            disable_geoip=disable_geoip,
            _allowlist=MINIMAL_ALLOWLIST if call.use_minimal else None,
        )

    def feature_enabled(self, key: str, distinct_id: Any, *, groups: Props | None = None,
                        person_properties: Props | None = None,
                        group_properties: Props | None = None,
                        only_evaluate_locally: bool = False,
                        send_feature_flag_events: bool = True,
                        disable_geoip: bool | None = None,
                        device_id: str | None = None) -> bool | None:
        """Whether the flag is on for this person (``None`` if it could not be evaluated)."""
        _deprecated("feature_enabled")
        value = self._value(key, distinct_id, groups, person_properties, group_properties,
                            only_evaluate_locally, send_feature_flag_events, disable_geoip,
                            device_id)
        return None if value is None else bool(value)

    def get_feature_flag(self, key: str, distinct_id: Any, *, groups: Props | None = None,
                         person_properties: Props | None = None,
                         group_properties: Props | None = None,
                         only_evaluate_locally: bool = False,
                         send_feature_flag_events: bool = True,
                         disable_geoip: bool | None = None,
                         device_id: str | None = None) -> bool | str | None:
        """The flag's value: a variant name, ``True``/``False``, or ``None``."""
        _deprecated("get_feature_flag")
        return self._value(key, distinct_id, groups, person_properties, group_properties,
                           only_evaluate_locally, send_feature_flag_events, disable_geoip,
                           device_id)

    def _value(self, key: str, distinct_id: Any, groups: Props | None,
               person_properties: Props | None, group_properties: Props | None,
               only_evaluate_locally: bool, send: bool, disable_geoip: bool | None,
               device_id: str | None) -> bool | str | None:
        result = self._single(
            key, distinct_id, groups=groups, person_properties=person_properties,
            group_properties=group_properties, only_evaluate_locally=only_evaluate_locally,
            send_feature_flag_events=send, disable_geoip=disable_geoip, device_id=device_id)
        return result.get_value() if result is not None else None

    def get_feature_flag_result(self, key: str, distinct_id: Any, *,
                                groups: Props | None = None,
                                person_properties: Props | None = None,
                                group_properties: Props | None = None,
                                only_evaluate_locally: bool = False,
                                send_feature_flag_events: bool = True,
                                disable_geoip: bool | None = None,
                                device_id: str | None = None) -> FeatureFlagResult | None:
        """Value, payload and reason of one flag."""
        return self._single(
            key, distinct_id, groups=groups, person_properties=person_properties,
            group_properties=group_properties, only_evaluate_locally=only_evaluate_locally,
            send_feature_flag_events=send_feature_flag_events, disable_geoip=disable_geoip,
            device_id=device_id)

    def get_feature_flag_payload(self, key: str, distinct_id: Any, *, match_value: Any = None,
                                 groups: Props | None = None,
                                 person_properties: Props | None = None,
                                 group_properties: Props | None = None,
                                 only_evaluate_locally: bool = False,
                                 send_feature_flag_events: bool = False,
                                 disable_geoip: bool | None = None,
                                 device_id: str | None = None) -> Any:
        """The flag's payload, JSON-decoded (``None`` if there is none)."""
        _deprecated("get_feature_flag_payload")
        if send_feature_flag_events:
            warnings.warn("send_feature_flag_events=True on get_feature_flag_payload is "
                          "deprecated", DeprecationWarning, stacklevel=2)
        result = self._single(
            key, distinct_id, groups=groups, person_properties=person_properties,
            group_properties=group_properties, only_evaluate_locally=only_evaluate_locally,
            send_feature_flag_events=send_feature_flag_events, disable_geoip=disable_geoip,
            device_id=device_id, match_value=match_value)
        return result.payload if result is not None else None

    # ------------------------------------------------------------ many flags

    def _local_all(self, distinct_id: Any, groups: dict[str, Any], person_properties: Props | None,
                   keyed_groups: dict[str, dict[str, Any]], device_id: str | None,
                   keys: Iterable[str] | None) -> tuple[dict[str, LocalResult], bool]:
        """Local results, and whether the server is needed for the rest."""
        definitions = self._local()
        if definitions is None:
            return {}, True
        results = definitions.evaluate_all(
            str(distinct_id), groups=groups, person_properties=person_properties,
            group_properties=keyed_groups, device_id=device_id, keys=keys)
        missing = keys is not None and any(k not in definitions.by_key for k in keys)
        inconclusive = any(r.inconclusive is not None for r in results.values())
        return results, missing or inconclusive

    def get_all_flags(self, distinct_id: Any, *, groups: Props | None = None,
                      person_properties: Props | None = None,
                      group_properties: Props | None = None,
                      only_evaluate_locally: bool = False,
                      disable_geoip: bool | None = None,
                      device_id: str | None = None,
                      flag_keys_to_evaluate: list[str] | None = None) -> dict[str, Any] | None:
        """Every flag's value for this person (no flag events)."""
        return self.get_all_flags_and_payloads(
            distinct_id, groups=groups, person_properties=person_properties,
            group_properties=group_properties, only_evaluate_locally=only_evaluate_locally,
            disable_geoip=disable_geoip, device_id=device_id,
            flag_keys_to_evaluate=flag_keys_to_evaluate)["featureFlags"]

    def get_all_flags_and_payloads(self, distinct_id: Any, *, groups: Props | None = None,
                                   person_properties: Props | None = None,
                                   group_properties: Props | None = None,
                                   only_evaluate_locally: bool = False,
                                   disable_geoip: bool | None = None,
                                   device_id: str | None = None,
                                   flag_keys_to_evaluate: list[str] | None = None
                                   ) -> FlagsAndPayloads:
        """Values and (serialised) payloads of every flag; the server's answer wins."""
        from posthog.flag_types import FlagsAndPayloads, valid_json_text
        from posthog.flags.remote import group_properties_with_keys

        if self.disabled:
            return FlagsAndPayloads(featureFlags=None, featureFlagPayloads=None)
        distinct_id = self._resolve_id(distinct_id)
        device_id = self._resolve_device(device_id)
        groups_d = dict(groups or {})
        keyed = group_properties_with_keys(groups_d, group_properties)
        local, needs_server = self._local_all(distinct_id, groups_d, person_properties, keyed,
                                              device_id, flag_keys_to_evaluate)
        values: dict[str, Any] = {}
        payloads: dict[str, Any] = {}
        for key, found in local.items():
            if found.inconclusive is None and found.value is not None:
                values[key] = found.value
                text = valid_json_text(found.payload)
                if text is not None:
                    payloads[key] = text
        if needs_server and not only_evaluate_locally and distinct_id is not None:
            try:
                response = self._remote(
                    distinct_id, groups=groups_d, person_properties=person_properties,
                    group_properties=keyed, disable_geoip=disable_geoip, device_id=device_id,
                    flag_keys=flag_keys_to_evaluate)
            except Exception as exc:
                logger.warning("/flags request failed; returning local results: %s", exc)
            else:
                remote_values: dict[str, Any] = {}
                remote_payloads: dict[str, Any] = {}
                for key, record in response.get("flags", {}).items():
                    if record.failed:
                        if key in values:
                            remote_values[key] = values[key]
                            if key in payloads:
                                remote_payloads[key] = payloads[key]
                        continue
                    remote_values[key] = record.get_value()
                    if record.enabled and record.payload is not None:
                        text = valid_json_text(record.payload)
                        if text is not None:
                            remote_payloads[key] = text
                values, payloads = remote_values, remote_payloads
        return FlagsAndPayloads(featureFlags=values, featureFlagPayloads=payloads)

    def evaluate_flags(self, distinct_id: Any = None, *, groups: Props | None = None,
                       person_properties: Props | None = None,
                       group_properties: Props | None = None,
                       only_evaluate_locally: bool = False,
                       disable_geoip: bool | None = None,
                       flag_keys: list[str] | None = None,
                       device_id: str | None = None) -> FeatureFlagEvaluations:
        """A snapshot of flags for one person: one evaluation, many reads (spec §7.3)."""
        from posthog.flags.remote import error_code, group_properties_with_keys
        from posthog.flags.snapshot import Evaluated, FeatureFlagEvaluations

        distinct_id = self._resolve_id(distinct_id)
        if self.disabled or distinct_id is None or flag_keys == []:
            return FeatureFlagEvaluations(None, None)
        device_id = self._resolve_device(device_id)
        groups_d = dict(groups or {})
        keyed = group_properties_with_keys(groups_d, group_properties)
        local, needs_server = self._local_all(distinct_id, groups_d, person_properties, keyed,
                                              device_id, flag_keys)
        flags: dict[str, Evaluated] = {}
        unresolved = {}
        for key, found in local.items():
            if found.inconclusive is None and found.value is not None:
                flags[key] = Evaluated(found.value, found.payload, True, found.reason,
                                       found.flag_id, found.version, found.has_experiment)
            elif found.inconclusive is not None:
                unresolved[key] = found.inconclusive
        request_id = evaluated_at = None
        errors: list[str] = []
        if needs_server and not only_evaluate_locally:
            try:
                response = self._remote(
                    distinct_id, groups=groups_d, person_properties=person_properties,
                    group_properties=keyed, disable_geoip=disable_geoip, device_id=device_id,
                    flag_keys=flag_keys)
            except Exception as exc:
                code = error_code(exc)
                if code == "quota_limited":
                    errors.append(code)
                logger.warning("/flags request failed; the snapshot holds local results: %s", exc)
            else:
                request_id, evaluated_at = response.get("requestId"), response.get("evaluatedAt")
                if response.get("errorsWhileComputingFlags"):
                    errors.append("errors_while_computing_flags")
                for key, record in response.get("flags", {}).items():
                    if key in flags:
                        continue  # locally resolved values win
                    unresolved.pop(key, None)
                    flags[key] = _evaluated_from_record(record)
        return FeatureFlagEvaluations(
            self, distinct_id, flags=flags, unresolved=unresolved, groups=groups_d,
            disable_geoip=disable_geoip, request_id=request_id, evaluated_at=evaluated_at,
            errors=errors, minimal=self._minimal_events)

    def _flag_properties(self, distinct_id: str, options: Any) -> dict[str, Any]:
        """``capture(send_feature_flags=...)``: ``$feature/*`` and ``$active_feature_flags``."""
        if options is True:
            options = {}
        elif not isinstance(options, Mapping):
            raise TypeError("send_feature_flags must be a bool or a SendFeatureFlagsOptions dict")
        if options.get("should_send") is False:
            return {}
        local_only = options.get("only_evaluate_locally")
        keys = options.get("flag_keys_filter")
        person = options.get("person_properties")
        group_props = options.get("group_properties")
        values: dict[str, Any] = {}
        use_local = local_only is True or (local_only is None and self._definitions is not None)
        if use_local:
            values = self.get_all_flags(distinct_id, person_properties=person,
                                        group_properties=group_props, only_evaluate_locally=True,
                                        flag_keys_to_evaluate=keys) or {}
        else:
            try:
                values = self._remote(distinct_id, groups=None, person_properties=person,
                                      group_properties=group_props, disable_geoip=None,
                                      device_id=self._resolve_device(None), flag_keys=keys
                                      ).get("flags", {})
                values = {k: f.get_value() for k, f in values.items() if not f.failed}
            except Exception as exc:
                logger.warning("could not add feature flags to the event: %s", exc)
                return {}
        props: dict[str, Any] = {f"$feature/{k}": v for k, v in values.items()}
        active = [k for k, v in values.items() if v is not False]
        if active:
            props["$active_feature_flags"] = active
        return props

    # ------------------------------------------------------------ remote config

    def get_remote_config_payload(self, key: str) -> Any:
        """A remote config flag's payload, decrypted by the server; ``None`` on failure."""
        if self.disabled:
            return None
        if not self.secret_key:
            logger.warning("get_remote_config_payload needs a secret_key; returning None")
            return None
        from urllib.parse import quote

        from posthog.flags.remote import check_quota
        from posthog.transport import http

        url = (f"{self.host}/api/projects/@current/feature_flags/{quote(str(key), safe='')}"
               f"/remote_config?token={quote(self.api_key)}")
        try:
            response = http.get_json(url, bearer=self.secret_key,
                                     timeout=self.feature_flags_request_timeout_seconds)
            data = response.json()
            check_quota(data)
            return data
        except Exception as exc:
            logger.error("could not load remote config %r: %s", key, exc)
            return None

    # ------------------------------------------------------------ lifecycle

    def _stop_flags(self, clear_caches: bool) -> None:
        if self._loader_ is not None:
            self._loader_.shutdown()
        if clear_caches and self._called_ is not None:
            self._called_.clear()

    def _flags_after_fork(self, restart: bool) -> None:
        if self._loader_ is not None:
            self._loader_.after_fork(restart and self.enable_local_evaluation
                                     and self._loader_.definitions is not None)


def _evaluated_from_record(record: FeatureFlag) -> Evaluated:
    from posthog.flags.snapshot import Evaluated

    meta = record.metadata
    return Evaluated(
        None if record.failed else record.get_value(),
        record.payload,
        False,
        record.reason.description if record.reason else None,
        getattr(meta, "id", None),
        getattr(meta, "version", None),
        getattr(meta, "has_experiment", None),
        record.failed,
    )
