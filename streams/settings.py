"""ltrr settings: one frozen object, read once at the entry point.

Precedence, highest first: command-line flags, ``LTRR_*`` environment variables, the TOML file
named by ``--config`` or ``LTRR_CONFIG`` (keys are the field names below), built-in defaults.
"""

from __future__ import annotations

import dataclasses
import inspect
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from ltrr.schemas.vw_args import VWArgsError, check_vw_args, parse_vw_args
from ltrr.streams.exceptions import SettingsError

ENV_PREFIX = "LTRR_"

#: Values of ``security_protocol`` (Kafka's names) and ``sasl_mechanism``.
#: Access scopes of the retrieval worker's HTTP API (``serve_tokens_<scope>``).
SERVE_SCOPES = ("search", "actions", "ops")
#: Shortest bearer token accepted, characters; RFC 6750's token alphabet.
MIN_TOKEN_CHARS = 16
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
RewardAggregation = Literal["max", "sum", "earliest"]
LogLevel = Literal["debug", "info", "warning", "error"]
ProcessingGuarantee = Literal["at_least_once", "exactly_once"]
SemanticEncoder = Literal["fp32", "int8", "onnx"]
SECURITY_PROTOCOLS: tuple[str, ...] = get_args(SecurityProtocol)
SASL_MECHANISMS: tuple[str, ...] = get_args(SaslMechanism)


def setting(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    secret: bool = False,
) -> Any:
    """A field with bounds (checked by ``Settings.validate``) in its metadata. ``secret``: never
    a command-line flag (it would show in process lists) and left out of ``repr``."""
    bounds = {"ge": ge, "gt": gt, "le": le, "lt": lt}
    metadata = {k: v for k, v in bounds.items() if v is not None}
    if secret:
        metadata["secret"] = True
    return field(default=default, repr=not secret, metadata=metadata)


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of the worker. Environment variable = ``LTRR_`` + the upper-cased name."""

    #: Kafka bootstrap servers, ``host:port[,host:port...]``.
    broker: str = "127.0.0.1:9092"
    #: Prefix of every ltrr topic name (``ltrr.`` gives ``ltrr.impressions``); lets several
    #: deployments or tests share one cluster.
    topic_prefix: str = "ltrr."
    #: Partitions of the keyed topics (impressions, actions, catalog); impressions and actions
    #: must have the same count so the join needs no repartition.
    partitions: int = setting(4, ge=1)
    #: Replication factor of created topics (1 for a single broker; 3 in production).
    replication_factor: int = setting(1, ge=1)
    #: Retention of the event topics (impressions, actions, rewards), hours.
    retention_hours: int = setting(7 * 24, ge=1)
    #: Retention of the dead-letter topic, hours.
    dlq_retention_hours: int = setting(14 * 24, ge=1)
    #: How clients talk to the brokers: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT (SASL login, no
    #: TLS) or SASL_SSL (SASL login over TLS). Applies to every Kafka client ltrr creates.
    security_protocol: SecurityProtocol = "PLAINTEXT"
    #: SASL mechanism with SASL_*: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    sasl_mechanism: SaslMechanism = "PLAIN"
    #: SASL user name with SASL_*.
    sasl_username: str = ""
    #: SASL password with SASL_*. Environment (LTRR_SASL_PASSWORD) or TOML only, never a flag
    #: (it would show in process lists), and left out of ``repr``.
    sasl_password: str = setting("", secret=True)
    #: With SSL/SASL_SSL: PEM file of the CA that signed the brokers' certificates (empty = the
    #: system's trusted CAs).
    ssl_cafile: str = ""
    #: With SSL/SASL_SSL: PEM client certificate (and chain) for brokers that require mutual
    #: TLS.
    ssl_certfile: str = ""
    #: Private key of ``ssl_certfile`` (empty = the key is in the certificate file).
    ssl_keyfile: str = ""
    #: With SSL/SASL_SSL: check that the broker's certificate names the host connected to.
    ssl_check_hostname: bool = True
    #: Faust application id: the consumer group and the prefix of changelog topics.
    app_id: str = "ltrr-worker"
    #: Where the worker keeps RocksDB state (one directory per worker process).
    data_dir: str = "./ltrr-data"
    #: Bind address of the worker's HTTP server (/metrics, /healthz, /readyz).
    web_host: str = "127.0.0.1"
    #: Port of the worker's HTTP server (0 = any free port).
    web_port: int = setting(6066, ge=0, le=65535)
    #: Largest accepted event, bytes; bigger messages go to the dead-letter topic as oversized.
    max_event_bytes: int = setting(256 * 1024, ge=1)
    #: Largest message the producer sends and the consumer fetches, bytes (snapshots chunk
    #: below this).
    max_message_bytes: int = setting(8 * 1024 * 1024, ge=1)
    #: Consumer-group session timeout, seconds: how long a dead worker holds its partitions.
    session_timeout_s: float = setting(10.0, gt=0)
    #: Consumer-group rebalance timeout, seconds: how long a join may wait for members.
    rebalance_timeout_s: float = setting(10.0, gt=0)
    #: Reward window: how long an impression collects actions (and orphan actions wait for
    #: their impression), seconds.
    reward_window_s: float = setting(600.0, gt=0)
    #: How long a closed impression is remembered so late actions still reach Q2E, seconds.
    late_horizon_s: float = setting(86_400.0, gt=0)
    #: How often the join closes due windows and sends pending rewards, seconds.
    join_tick_s: float = setting(1.0, gt=0)
    #: How late an event may reach Kafka after its own timestamp, seconds. Windows close on
    #: event time; a quiet partition read to its end lets its watermark follow the clock
    #: minus this delay. An impression delivered later than this (and later than the reward
    #: window) after its actions turns them into orphans.
    event_delay_s: float = setting(15.0, gt=0)
    #: at_least_once: rewards may reach the rewards topic twice after a crash or a partition
    #: move (identical copies; the learner learns each EventId once). exactly_once: each join
    #: partition sends its rewards and the changelog rows marking them sent in one Kafka
    #: transaction, a worker that loses a partition is fenced, and the learner, Q2E and restores
    #: read committed data only: no copy is ever visible. Needs Apache Kafka (tansu has no
    #: transactions).
    processing_guarantee: ProcessingGuarantee = "at_least_once"
    #: Events whose timestamp_ms lies more than this many seconds ahead of the worker's clock
    #: are dead-lettered (invalid_value, field timestamp_ms).
    max_clock_skew_s: float = setting(3600.0, gt=0)
    #: Events older than this many seconds (by timestamp_ms, against the worker's clock) are
    #: dead-lettered the same way.
    max_event_age_s: float = setting(30 * 86_400.0, gt=0)
    #: Reward weight overrides, ``type=weight`` comma-separated (defaults: click=0.5, play=1,
    #: like=1, add_to_favorites=1, add_to_playlist=1, share=1, purchase=1, skip=-0.2).
    reward_weights: str = ""
    #: How an impression's actions combine: max, sum (clipped) or earliest.
    reward_aggregation: RewardAggregation = "max"
    #: Reward of an impression with no action in its window.
    default_reward: float = 0.0
    #: A play counts only if it lasted this many seconds (0 = any play counts).
    play_min_seconds: float = setting(30.0, ge=0)
    #: Lower clip of the ``sum`` aggregation.
    reward_clip_min: float = -1.0
    #: Upper clip of the ``sum`` aggregation.
    reward_clip_max: float = 1.0
    #: Vowpal Wabbit arguments of every model (empty = ltrr's default,
    #: ``--cb_explore_adf --squarecb -q cp -q cr -q qp -q sp``).
    vw_args: str = ""
    #: Model keys the learner accepts, comma-separated (empty = any, up to ``max_models``).
    #: Rewards of other models are dead-lettered as unknown_model.
    models: str = ""
    #: With ``models`` empty: most distinct models one worker learns; rewards of further
    #: models are dead-lettered as unknown_model (bounds memory against poison).
    max_models: int = setting(16, ge=1)
    #: Rewards whose logged probability is below this are dead-lettered (invalid_value):
    #: their importance weight 1/p would swamp the model.
    min_probability: float = setting(1e-4, gt=0, lt=1)
    #: Checkpoint the learner (model + offsets, atomically) every N examples ...
    checkpoint_every: int = setting(1000, ge=1)
    #: ... or every T seconds, whichever comes first.
    checkpoint_interval_s: float = setting(5.0, gt=0)
    #: Publish a model snapshot every N learned examples ...
    snapshot_every: int = setting(1000, ge=1)
    #: ... or every T seconds when something was learned.
    snapshot_interval_s: float = setting(30.0, gt=0)
    #: HMAC key that signs snapshots (retrieval workers verify with the same key). No default:
    #: ``ltrr worker``, ``serve``, ``model`` and ``eval --snapshot-topic`` refuse to start
    #: without one (``ltrr demo`` and ``simulate`` generate a random key per run).
    snapshot_key: str = setting("", secret=True)
    #: Name of the signing key, so keys can be rotated (workers may accept several).
    snapshot_key_id: str = "k1"
    #: Retrieval workers and ``ltrr eval``: further keys to accept snapshots from, besides
    #: ``snapshot_key_id``/``snapshot_key``, as ``id=key`` pairs, comma-separated (env/TOML
    #: only, like the key). Lets a key rotation run without a gap: accept old and new, then
    #: switch the learner, then drop the old.
    snapshot_keys_accepted: str = setting("", secret=True)
    #: Largest model a snapshot may carry, bytes: a bigger one is refused before anything is
    #: allocated for it (retrieval workers, ``ltrr eval``, the learner's adoption).
    max_model_bytes: int = setting(256 * 1024 * 1024, ge=1)
    #: Half-life of Q2E engagement, hours.
    q2e_half_life_hours: float = setting(168.0, gt=0)
    #: Retrieval worker (``ltrr serve``): bind address of the HTTP API.
    serve_host: str = "127.0.0.1"
    #: Port of the HTTP API.
    serve_port: int = setting(8080, ge=0, le=65535)
    #: JSONL catalog loaded at start (CatalogEntity v1 per line); the catalog topic adds to it.
    catalog_path: str = ""
    #: Strategies to build, comma-separated: built-in names (lexical, semantic, memory,
    #: popular, fresh) or ``package.module:Factory`` for your own.
    strategies: str = "lexical,semantic,memory,popular,fresh"
    #: Explicit plans (``lexical:60+memory:40;semantic:100``); empty = every subset of up to
    #: ``plan_max_size`` strategies sharing ``plan_total_budget`` candidates evenly.
    plans: str = ""
    #: Largest strategy subset in the default plan set.
    plan_max_size: int = setting(3, ge=1)
    #: Candidates per plan, shared evenly by its strategies.
    plan_total_budget: int = setting(100, ge=1)
    #: Cold start: plan id to favour before any snapshot (empty = uniform exploration).
    default_plan: str = ""
    #: With ``default_plan``: probability mass spread over the other plans.
    cold_epsilon: float = setting(0.2, ge=0, le=1)
    #: Model key this retrieval worker serves and logs impressions for.
    model_name: str = "default"
    #: Weight of the Q2E score in the final ranking (see retrieval/ranking.py).
    q2e_boost: float = setting(0.5, ge=0)
    #: Impressions buffered while the broker is unreachable (oldest dropped beyond this).
    impression_buffer: int = setting(10_000, ge=1)
    #: Retrieval worker access control: bearer tokens accepted per scope, comma-separated
    #: (several at once, for rotation): ``search`` (POST /search), ``actions`` (POST /actions),
    #: ``ops`` (GET /metrics). Environment or TOML only, never a flag, and left out of ``repr``.
    #: A scope without tokens is open, which ``ltrr serve`` refuses on a non-loopback
    #: ``serve_host`` unless ``serve_allow_anonymous`` is set.
    serve_tokens_search: str = setting("", secret=True)
    serve_tokens_actions: str = setting("", secret=True)
    serve_tokens_ops: str = setting("", secret=True)
    #: Let ``ltrr serve`` bind a non-loopback address with a scope that has no tokens (e.g.
    #: behind a gateway that authenticates); off, it refuses to start.
    serve_allow_anonymous: bool = False
    #: TLS of the HTTP API: PEM certificate (and chain) and private key (empty = the key is in
    #: the certificate file); with ``serve_tls_client_cafile``, clients must present a
    #: certificate signed by that CA (mutual TLS). Empty certfile = plain HTTP.
    serve_tls_certfile: str = ""
    #: Private key of ``serve_tls_certfile`` (empty = the key is in the certificate file).
    serve_tls_keyfile: str = ""
    #: CA whose client certificates the HTTP API requires (mutual TLS; empty = none).
    serve_tls_client_cafile: str = ""
    #: Most open HTTP connections; further ones get a 503 and are closed.
    serve_max_connections: int = setting(1024, ge=1, le=1_000_000)
    #: Seconds a client has to send a request's headers (from connecting or from the previous
    #: response) and, separately, its body; then the connection is closed (headers) or the
    #: request answered 408 (body).
    serve_read_timeout_s: float = setting(30.0, gt=0, le=3600)
    #: HTTP worker processes of ``ltrr serve``, sharing ``serve_port`` (SO_REUSEPORT), each
    #: with its own policy, replicas and impression producer; 0 = one per CPU core available.
    #: Each worker answers /metrics and /readyz for itself.
    serve_workers: int = setting(1, ge=0, le=64)
    #: Run a search's strategies concurrently, the query embedding micro-batched in a thread of
    #: its own, off the event loop; false = one after the other on the loop (the old path, kept
    #: for comparison in bench/serve.py).
    serve_offload: bool = True
    #: With serve_offload: also run the lexical (tantivy) and ANN searches in threads. Off by
    #: default: about 1 ms each at 100,000 entities, they cost less on the event loop than the
    #: hand-off to a thread and back (2 cores: 202-232 vs. 165-171 req/s at 32 clients).
    serve_offload_searches: bool = False
    #: Longest wait, milliseconds, of a query embedding for others to share its forward pass.
    serve_embed_max_wait_ms: float = setting(2.0, ge=0, le=1000)
    #: Query embeddings kept in the semantic strategy's LRU cache (384 floats each).
    serve_query_cache_size: int = setting(10_000, ge=0)
    #: The semantic strategy's encoder: ``onnx`` (all-MiniLM-L6-v2 exported once to ONNX and
    #: run by ONNX Runtime: the same vectors as ``fp32``, cosine > 0.9999, checked at every
    #: load; short queries encode 1.3-4x faster; falls back to ``fp32`` with a warning where
    #: ONNX Runtime is missing), ``fp32`` (the model run by torch) or ``int8`` (the same
    #: weights, Linear layers dynamically quantized to int8 at load: vectors off fp32's, cosine
    #: about 0.94, nDCG@10 0.2-2.3 points lower on the dev collections, so opt-in; see
    #: bench/encoder.py, docs/serving.md). ``onnx`` and ``fp32`` share the item vector cache;
    #: ``int8`` has its own (switching to it re-embeds the catalog once).
    serve_semantic_encoder: SemanticEncoder = "onnx"
    #: How long the impression producer waits to fill a batch, milliseconds.
    impression_linger_ms: int = setting(5, ge=0, le=1000)
    #: Add the query-strategy history features (how much of the query's remembered Q2E
    #: engagement each strategy and plan retrieves and shows, and how much of what it shows
    #: was ignored before) to the s and r namespaces. Off by default: probes show no
    #: consistent gain yet (docs/simulation.md).
    history_features: bool = False
    #: Where item vectors and indexes are cached between restarts.
    vector_cache_dir: str = "./ltrr-cache"
    #: Log level of the worker: debug, info, warning, error.
    log_level: LogLevel = "info"

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the non-None overrides applied (used for command-line flags)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **given)

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str],
        config_path: str | Path | None = None,
        *,
        validate: bool = True,
    ) -> Settings:
        """Settings from an optional TOML file, then ``LTRR_*`` variables in ``environ``.

        ``validate=False`` lets a caller apply command-line overrides first and validate the
        result once (a flag may complete what the environment started, e.g. the SASL user).
        """
        values: dict[str, Any] = {}
        path = config_path or environ.get(ENV_PREFIX + "CONFIG")
        if path:
            values.update(_read_toml(Path(path)))
        hints = get_type_hints(cls)
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _coerce(
                    f"{f.name} ({ENV_PREFIX}{f.name.upper()})", raw, hints[f.name]
                )
        settings = cls(**values)
        if validate:
            settings.validate()
        return settings

    def validate(self) -> None:
        """Refuse any value outside its type, choices or bounds, naming the setting and its
        environment variable; then the checks that involve several settings."""
        hints = get_type_hints(type(self))
        for f in fields(self):
            _check_value(f.name, getattr(self, f.name), hints[f.name], f.metadata)
        if self.reward_clip_min > self.reward_clip_max:
            raise SettingsError(
                f"reward_clip_min ({self.reward_clip_min}) must not exceed reward_clip_max "
                f"({self.reward_clip_max})"
            )
        self.verification_keys()  # refuses a malformed snapshot_keys_accepted
        if self.vw_args:
            try:
                check_vw_args(self.model_vw_args())
            except VWArgsError as exc:
                raise SettingsError(f"vw_args: {exc} (LTRR_VW_ARGS)") from exc
        if not self.broker.strip():
            raise SettingsError("broker is empty; set LTRR_BROKER=host:port")
        self._validate_security()
        self._validate_serve()

    def model_vw_args(self) -> tuple[str, ...]:
        """The Vowpal Wabbit arguments of every model (``vw_args``, else ltrr's default) as
        the worker, ``learn-offline``, ``eval`` and ``model`` all run them."""
        return parse_vw_args(self.vw_args)

    def require_snapshot_key(self) -> None:
        """Refuse to go on without a signing key (there is no built-in one)."""
        if not self.snapshot_key:
            raise SettingsError(
                "no snapshot key: set LTRR_SNAPSHOT_KEY to a secret shared by the learning and "
                'retrieval workers, e.g. export LTRR_SNAPSHOT_KEY="$(openssl rand -hex 32)" '
                "(ltrr demo and ltrr simulate make one up per run)"
            )

    def model_allow_list(self) -> frozenset[str]:
        """The configured model keys (empty = any, bounded by ``max_models``)."""
        return frozenset(filter(None, (m.strip() for m in self.models.split(","))))

    def verification_keys(self) -> dict[str, bytes]:
        """Key id -> key of every key a snapshot may be signed with: the signing key and
        ``snapshot_keys_accepted`` (which may not redefine the signing key's id)."""
        keys = {self.snapshot_key_id: self.snapshot_key.encode()} if self.snapshot_key else {}
        for part in filter(None, (p.strip() for p in self.snapshot_keys_accepted.split(","))):
            key_id, sep, key = part.partition("=")
            key_id = key_id.strip()
            if not sep or not key_id or not key:
                raise SettingsError(
                    "snapshot_keys_accepted must be id=key pairs, comma-separated "
                    "(e.g. LTRR_SNAPSHOT_KEYS_ACCEPTED=k1=old-secret)"
                )
            if key_id in keys and keys[key_id] != key.encode():
                raise SettingsError(
                    f"snapshot_keys_accepted gives key id {key_id!r} a second, different key"
                )
            keys[key_id] = key.encode()
        return keys

    def _validate_security(self) -> None:
        """Refuse combinations that could only fail later, deep inside a Kafka client."""
        protocol = self.security_protocol
        if protocol not in SECURITY_PROTOCOLS:
            raise SettingsError(
                f"security_protocol must be one of {'|'.join(SECURITY_PROTOCOLS)}, got "
                f"{protocol!r} (LTRR_SECURITY_PROTOCOL)"
            )
        sasl, tls = protocol.startswith("SASL_"), protocol.endswith("SSL")
        if sasl:
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise SettingsError(
                    f"sasl_mechanism must be one of {'|'.join(SASL_MECHANISMS)}, got "
                    f"{self.sasl_mechanism!r} (LTRR_SASL_MECHANISM)"
                )
            missing = [
                f"{ENV_PREFIX}{name.upper()}"
                for name in ("sasl_username", "sasl_password")
                if not getattr(self, name)
            ]
            if missing:
                raise SettingsError(
                    f"security_protocol {protocol} needs a SASL user name and password; "
                    f"set {' and '.join(missing)} (or the TOML keys)"
                )
        elif self.sasl_username or self.sasl_password:
            raise SettingsError(
                f"SASL credentials are set but security_protocol is {protocol}, which sends "
                f"none; set LTRR_SECURITY_PROTOCOL=SASL_PLAINTEXT or SASL_SSL, or unset "
                f"LTRR_SASL_USERNAME and LTRR_SASL_PASSWORD"
            )
        files = {n: getattr(self, n) for n in ("ssl_cafile", "ssl_certfile", "ssl_keyfile")}
        given = [name for name, path in files.items() if path]
        if given and not tls:
            raise SettingsError(
                f"{', '.join(given)} set but security_protocol is {protocol}, which does not "
                f"use TLS; set LTRR_SECURITY_PROTOCOL=SSL or SASL_SSL, or unset them"
            )
        for name in given:
            path = Path(files[name]).expanduser()
            if not (path.is_file() and os.access(path, os.R_OK)):
                raise SettingsError(
                    f"{name} {files[name]!r} does not exist or is not readable; set "
                    f"{ENV_PREFIX}{name.upper()} to an existing PEM file"
                )
        if self.ssl_keyfile and not self.ssl_certfile:
            raise SettingsError(
                "ssl_keyfile is set without ssl_certfile; set LTRR_SSL_CERTFILE to the client "
                "certificate that goes with the key"
            )

    def serve_tokens(self) -> dict[str, tuple[str, ...]]:
        """Scope (search, actions, ops) -> the bearer tokens it accepts (empty = open)."""
        return {
            scope: tuple(
                t
                for t in (p.strip() for p in getattr(self, f"serve_tokens_{scope}").split(","))
                if t
            )
            for scope in SERVE_SCOPES
        }

    def serve_exposure_problem(self) -> str | None:
        """Why ``ltrr serve`` must not start as configured, or None: an open scope (no tokens)
        on a non-loopback ``serve_host``, unless ``serve_allow_anonymous`` says it is meant."""
        open_scopes = [scope for scope, tokens in self.serve_tokens().items() if not tokens]
        if not open_scopes or self.serve_allow_anonymous or _is_loopback(self.serve_host):
            return None
        names = " and ".join(f"{ENV_PREFIX}SERVE_TOKENS_{s.upper()}" for s in open_scopes)
        return (
            f"serve_host {self.serve_host} is reachable from other machines but scope(s) "
            f"{', '.join(open_scopes)} have no bearer tokens, so anyone could use them; set "
            f"{names} (e.g. openssl rand -hex 32), or set {ENV_PREFIX}SERVE_ALLOW_ANONYMOUS=true "
            f"if something in front of ltrr already authenticates"
        )

    def _validate_serve(self) -> None:
        """Refuse malformed tokens, TLS files that are not there, and unbounded limits."""
        for scope, tokens in self.serve_tokens().items():
            name = f"{ENV_PREFIX}SERVE_TOKENS_{scope.upper()}"
            for index, token in enumerate(tokens):
                if not _TOKEN.fullmatch(token):
                    raise SettingsError(
                        f"{name}: token #{index + 1} has characters a bearer token cannot "
                        f"carry; use letters, digits and -._~+/ (e.g. openssl rand -hex 32)"
                    )
                if len(token) < MIN_TOKEN_CHARS:
                    raise SettingsError(
                        f"{name}: token #{index + 1} is {len(token)} characters; use at least "
                        f"{MIN_TOKEN_CHARS} (e.g. openssl rand -hex 32)"
                    )
        files = ("serve_tls_certfile", "serve_tls_keyfile", "serve_tls_client_cafile")
        for name in files:
            value = getattr(self, name)
            path = Path(value).expanduser()
            if value and not (path.is_file() and os.access(path, os.R_OK)):
                raise SettingsError(
                    f"{name} {value!r} does not exist or is not readable; set "
                    f"{ENV_PREFIX}{name.upper()} to an existing PEM file"
                )
        if (self.serve_tls_keyfile or self.serve_tls_client_cafile) and not (
            self.serve_tls_certfile
        ):
            raise SettingsError(
                "serve_tls_keyfile or serve_tls_client_cafile is set without "
                "serve_tls_certfile; set LTRR_SERVE_TLS_CERTFILE to the server certificate"
            )

    @property
    def broker_url(self) -> str:
        """The broker list as Faust wants it (``kafka://host:port;host:port``)."""
        return ";".join(f"kafka://{b.strip()}" for b in self.broker.split(",") if b.strip())


def _is_loopback(host: str) -> bool:
    """True when ``host`` is reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost: may resolve to anything
        return False


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError as exc:
        raise SettingsError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from exc
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SettingsError(
            f"config file {path} has unknown keys {unknown}; known keys: {sorted(known)}"
        )
    hints = get_type_hints(Settings)
    return {key: _coerce(f"{key} in {path}", value, hints[key]) for key, value in data.items()}


def _coerce(name: str, raw: Any, kind: Any) -> Any:
    """``raw`` (an environment string or a TOML value) as a value of the setting's type, or a
    SettingsError that names where it came from (``name``)."""
    if not isinstance(raw, str):
        if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
            return float(raw)
        if _is_instance(raw, kind):
            return raw
        raise SettingsError(f"{name} must be {_kind_text(kind)}, got {raw!r}")
    if get_origin(kind) is Literal:
        choices = get_args(kind)
        value = raw.strip().lower() if kind is LogLevel else raw.strip()
        if value not in choices:
            raise SettingsError(f"{name} must be one of {'|'.join(choices)}, got {raw!r}")
        return value
    if kind is int:
        try:
            return int(raw)
        except ValueError as exc:
            raise SettingsError(f"{name} must be an integer, got {raw!r}") from exc
    if kind is float:
        try:
            return float(raw)
        except ValueError as exc:
            raise SettingsError(f"{name} must be a number, got {raw!r}") from exc
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise SettingsError(f"{name} must be true or false, got {raw!r}")
    return raw


def _is_instance(value: Any, kind: Any) -> bool:
    if get_origin(kind) is Literal:
        return value in get_args(kind)
    if kind in (int, float):
        return isinstance(value, kind) and not isinstance(value, bool)
    return isinstance(value, kind)


def _kind_text(kind: Any) -> str:
    if get_origin(kind) is Literal:
        return "one of " + "|".join(get_args(kind))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        kind, str(kind)
    )


def _check_value(name: str, value: Any, kind: Any, metadata: Mapping[str, Any]) -> None:
    """Type, choices and bounds of one setting."""
    where = f"{name} ({ENV_PREFIX}{name.upper()})"
    if not _is_instance(value, kind) and not (
        kind is float and isinstance(value, int) and not isinstance(value, bool)
    ):
        raise SettingsError(f"{where} must be {_kind_text(kind)}, got {value!r}")
    bound = _bounds_text(metadata)
    if bound and not _within(value, metadata):
        raise SettingsError(f"{where} must be {bound}, got {value!r}")


def _within(value: float, metadata: Mapping[str, Any]) -> bool:
    checks = {
        "ge": lambda b: value >= b,
        "gt": lambda b: value > b,
        "le": lambda b: value <= b,
        "lt": lambda b: value < b,
    }
    return all(check(metadata[key]) for key, check in checks.items() if key in metadata)


def _bounds_text(metadata: Mapping[str, Any]) -> str:
    """``>= 1``, ``> 0 and < 1``, ... (empty without bounds)."""
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return " and ".join(f"{signs[k]} {_number(metadata[k])}" for k in signs if k in metadata)


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


@dataclass(frozen=True, slots=True)
class SettingDoc:
    """What ``--help``, ``ltrr settings`` and docs/configuration.md say about one setting."""

    name: str
    env: str
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...]
    bounds: str
    secret: bool

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def setting_docs() -> dict[str, SettingDoc]:
    """Every setting with its help text: the ``#:`` comment lines above its field in this
    file's source (a field without its own comment shares the one above it)."""
    helps = _field_comments()
    hints = get_type_hints(Settings)
    docs: dict[str, SettingDoc] = {}
    for f in fields(Settings):
        kind = hints[f.name]
        literal = get_origin(kind) is Literal
        docs[f.name] = SettingDoc(
            name=f.name,
            env=ENV_PREFIX + f.name.upper(),
            kind="choice" if literal else kind.__name__,
            default=f.default,
            help=helps.get(f.name, ""),
            choices=get_args(kind) if literal else (),
            bounds=_bounds_text(f.metadata),
            secret=bool(f.metadata.get("secret")),
        )
    return docs


def _field_comments() -> dict[str, str]:
    source = inspect.getsource(Settings)
    helps: dict[str, str] = {}
    comment: list[str] = []
    last = ""
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            comment.append(stripped[2:].strip())
            continue
        match = re.match(r"    (\w+): ", line)
        if match and not line.startswith("     "):
            if comment:
                last = " ".join(comment)
            helps[match.group(1)] = last
        elif stripped:
            last = ""
        comment = []
    return helps
