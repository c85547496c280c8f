//! Configuration in layers: `config/default.toml` (compiled in) → an optional TOML file
//! named by `CONFIG_FILE` → a `.env` file in the working directory → environment
//! variables (the key in upper case). Real environment variables win over `.env`.
//!
//! [`Config::load`] validates every value and names the offending key in its error, so a
//! typo stops the server at start instead of misbehaving later.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer};
use wagate_actors::domain::EngineKind;

/// The defaults, compiled into the binary so a fresh checkout needs no file.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// The keys of `default.toml`: the only ones a layer may set. Environment variables are
/// their upper-case forms, so a key is declared once, in that file (and read by
/// [`RawConfig`], which refuses any other).
fn default_keys() -> Vec<String> {
    DEFAULT_TOML
        .lines()
        .filter_map(|line| {
            let (key, _) = line.split_once('=')?;
            let key = key.trim();
            let plain = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            plain.then(|| key.to_owned())
        })
        .collect()
}

/// Raw values as read from the layers, before validation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(deserialize_with = "any_string")]
    host: String,
    port: u16,
    max_body_bytes: usize,
    max_upload_bytes: usize,
    actor_call_timeout_ms: u64,
    webhook_timeout_ms: u64,
    webhook_auto_pause_ms: u64,
    stats_flush_ms: u64,
    #[serde(deserialize_with = "any_string")]
    app_env: String,
    #[serde(deserialize_with = "any_string")]
    data_dir: String,
    #[serde(deserialize_with = "any_string")]
    rust_log: String,
    #[serde(deserialize_with = "any_string")]
    log_format: String,
    #[serde(deserialize_with = "any_string")]
    log_dir: String,
    #[serde(deserialize_with = "any_string")]
    database_provider: String,
    #[serde(deserialize_with = "any_string")]
    sqlite_database_url: String,
    #[serde(deserialize_with = "any_string")]
    database_url: String,
    #[serde(deserialize_with = "any_string")]
    cluster_mode: String,
    #[serde(deserialize_with = "any_string")]
    node_id: String,
    #[serde(deserialize_with = "any_string")]
    node_advertise_url: String,
    #[serde(deserialize_with = "any_string")]
    cluster_secret: String,
    cluster_lease_ttl_ms: u64,
    cluster_lease_renew_ms: u64,
    cluster_scan_ms: u64,
    #[serde(deserialize_with = "any_string")]
    jwt_secret: String,
    #[serde(deserialize_with = "any_string")]
    jwt_expiration: String,
    #[serde(deserialize_with = "any_string")]
    secret_key: String,
    #[serde(deserialize_with = "any_string")]
    admin_email: String,
    #[serde(deserialize_with = "any_string")]
    admin_password: String,
    #[serde(deserialize_with = "any_string")]
    admin_first_name: String,
    #[serde(deserialize_with = "any_string")]
    admin_last_name: String,
    #[serde(deserialize_with = "any_string")]
    wa_engine: String,
    #[serde(deserialize_with = "lenient_u64")]
    sandbox_autopair_ms: u64,
    #[serde(deserialize_with = "any_string")]
    wacore_client_version: String,
    #[serde(deserialize_with = "any_string")]
    wacore_ws_url: String,
    wacore_shutdown_timeout_ms: u64,
    restart_backoff_base_ms: u64,
    restart_backoff_max_ms: u64,
    restart_budget: u32,
    restart_window_ms: u64,
    allow_private_network_urls: bool,
    #[serde(deserialize_with = "any_string")]
    waba_graph_base_url: String,
    #[serde(deserialize_with = "any_string")]
    waba_api_version: String,
    waba_chat_idle_ms: u64,
    waba_event_retention: usize,
    waba_media_timeout_ms: u64,
    waba_media_max_bytes: u64,
    waba_media_retry_ms: u64,
    waba_templates_ttl_ms: u64,
    rate_limit_per_minute: u32,
    login_max_failures: u32,
    login_lockout_ms: u64,
    #[serde(deserialize_with = "any_string")]
    cors_allowed_origins: String,
}

/// Text settings accept any scalar: `ADMIN_FIRST_NAME=true` or `ADMIN_PASSWORD=123456` are
/// strings, even though the environment layer parses them as a bool or a number.
fn any_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Str(String),
        Bool(bool),
        Int(i64),
        Uint(u64),
        Float(f64),
    }
    Ok(match Scalar::deserialize(d)? {
        Scalar::Str(s) => s,
        Scalar::Bool(b) => b.to_string(),
        Scalar::Int(i) => i.to_string(),
        Scalar::Uint(u) => u.to_string(),
        Scalar::Float(f) => f.to_string(),
    })
}

/// An environment variable that is set but empty means "unset" for optional numbers.
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(u64),
        Str(String),
    }
    match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => Ok(n),
        NumOrStr::Str(s) if s.trim().is_empty() => Ok(0),
        NumOrStr::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("'{s}' is not a number"))),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseProvider {
    Sqlite,
    Mongodb,
}

impl DatabaseProvider {
    pub fn as_str(&self) -> &'static str {
        match self {
            DatabaseProvider::Sqlite => "sqlite",
            DatabaseProvider::Mongodb => "mongodb",
        }
    }
}

/// One node of a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub node_id: String,
    /// Where the other nodes reach this one, without a trailing slash.
    pub advertise_url: String,
    /// Signs forwarded calls; the same on every node.
    pub secret: Secret,
    pub lease_ttl: Duration,
    pub renew_every: Duration,
    pub scan_every: Duration,
}

/// A secret that never prints: `Debug` shows only whether it is set.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("Secret(<unset>)")
        } else {
            f.write_str("Secret(<redacted>)")
        }
    }
}

/// Validated configuration of one server process.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub max_body_bytes: usize,
    pub max_upload_bytes: usize,
    pub actor_call_timeout: Duration,
    /// How long one webhook request may take before it counts as failed.
    pub webhook_timeout: Duration,
    /// Pause an instance's webhook delivery once every attempt has failed for this
    /// long; None (0 in the settings): never.
    pub webhook_auto_pause: Option<Duration>,
    /// How often usage counts are written to storage.
    pub stats_flush_interval: Duration,
    pub app_env: AppEnv,
    pub data_dir: PathBuf,
    pub rust_log: String,
    pub log_format: LogFormat,
    /// Where daily log files are written besides stdout; `None` = stdout only.
    pub log_dir: Option<PathBuf>,
    /// The `.env` file the settings were read from, if there was one.
    pub env_file: Option<PathBuf>,
    pub database_provider: DatabaseProvider,
    /// Path of the SQLite file (`:memory:` allowed).
    pub sqlite_path: PathBuf,
    /// The SQLite URL as configured, for `/api/db/status`.
    pub sqlite_url: String,
    pub database_url: Secret,
    /// Cluster mode (`CLUSTER_MODE=mongodb`); None: a single server.
    pub cluster: Option<ClusterConfig>,
    /// Empty when not configured: a random per-process secret is used (development only).
    pub jwt_secret: Secret,
    pub jwt_expiration: Duration,
    /// 32 bytes when configured, otherwise read or created under `data_dir`.
    pub secret_key: Option<[u8; 32]>,
    pub admin_email: String,
    pub admin_password: Secret,
    pub admin_first_name: String,
    pub admin_last_name: String,
    pub wa_engine: EngineKind,
    pub sandbox_autopair: Option<Duration>,
    /// The WhatsApp Web version real sessions announce; `None` looks it up at connect.
    pub wacore_client_version: Option<(u32, u32, u32)>,
    /// Where real sessions connect; `None` is WhatsApp's own endpoint.
    pub wacore_ws_url: Option<String>,
    /// How long a real session gets to disconnect cleanly before it is aborted.
    pub wacore_shutdown_timeout: Duration,
    pub restart_backoff_base: Duration,
    pub restart_backoff_max: Duration,
    pub restart_budget: u32,
    pub restart_window: Duration,
    pub allow_private_network_urls: bool,
    pub waba_graph_base_url: String,
    pub waba_api_version: String,
    /// How long an operator desk chat actor lives without a request.
    pub waba_chat_idle: Duration,
    /// Operator stream events kept for clients that resume with `Last-Event-ID`.
    pub waba_event_retention: usize,
    /// How long fetching one inbound WABA file from Meta may take.
    pub waba_media_timeout: Duration,
    /// The largest inbound WABA file the desk keeps.
    pub waba_media_max_bytes: u64,
    /// The delay before the first retry of a failed media fetch (it doubles).
    pub waba_media_retry: Duration,
    /// How long an account's template list read from Meta is served before it is read
    /// again.
    pub waba_templates_ttl: Duration,
    /// Authenticated calls one user may make per minute; 0 = unlimited.
    pub rate_limit_per_minute: u32,
    /// Failed logins of one email before it is locked out; 0 = no throttling.
    pub login_max_failures: u32,
    /// How long failures are remembered, and how long a lockout lasts.
    pub login_lockout: Duration,
    /// Origins allowed by CORS (`*` = any); empty = no CORS headers at all.
    pub cors_allowed_origins: Vec<String>,
}

/// Why the configuration was refused; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

fn invalid(key: &str, why: impl fmt::Display) -> ConfigError {
    ConfigError(format!("{} ({}): {why}", key.to_uppercase(), key))
}

impl Config {
    /// Reads the layers: the `.env` file of the working directory ([`DOTENV_FILE`]) and
    /// the real process environment, which wins over it.
    ///
    /// Fails when a value has the wrong type or is out of range, naming the key, and when
    /// `.env` has a line that is not a setting, naming the line.
    pub fn load() -> Result<Config, ConfigError> {
        let dotenv = read_dotenv(Path::new(DOTENV_FILE))?;
        let from_dotenv = |key: &str| {
            dotenv
                .as_ref()
                .and_then(|(_, values)| values.iter().find(|(k, _)| k == key))
                .map(|(_, v)| v.clone())
        };
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(file) = std::env::var("CONFIG_FILE")
            .ok()
            .or_else(|| from_dotenv("CONFIG_FILE"))
            && !file.trim().is_empty()
        {
            if !Path::new(&file).is_file() {
                return Err(ConfigError(format!(
                    "CONFIG_FILE: '{file}' does not exist or is not a file"
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        let keys = default_keys();
        // The first setting of a key counts, as dotenvy reads files; other keys (a
        // compose file's, say) are left alone.
        for key in &keys {
            if let Some(v) = from_dotenv(&key.to_uppercase()) {
                // Parsed like an environment variable ("true" → bool, "3000" → number).
                let value: figment::value::Value = v.parse().unwrap_or_else(|never| match never {});
                // The default profile, not the global one of a plain tuple: the
                // environment, merged next, must win.
                figment = figment.merge(Serialized::default(key, value));
            }
        }
        figment = figment.merge(
            Env::raw()
                .filter(move |k| keys.iter().any(|key| k.as_str().eq_ignore_ascii_case(key)))
                .map(|k| k.as_str().to_lowercase().into()),
        );
        let mut config = Self::from_figment(figment)?;
        config.env_file = dotenv.map(|(path, _)| path);
        Ok(config)
    }

    /// Defaults plus the given overrides (keys as in `default.toml`); what tests use.
    pub fn from_overrides<'a>(
        overrides: impl IntoIterator<Item = (&'a str, String)>,
    ) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        for (k, v) in overrides {
            // Parse like an environment variable would be ("true" → bool, "3000" → number).
            let value: figment::value::Value = v.parse().unwrap_or_else(|never| match never {});
            figment = figment.merge((k, value));
        }
        Self::from_figment(figment)
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let raw: RawConfig = figment.extract().map_err(|e| {
            let key = e.path.join(".");
            let what = e.kind.to_string();
            if key.is_empty() {
                ConfigError(what)
            } else {
                invalid(&key, what)
            }
        })?;
        Self::validate(raw)
    }

    fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
        let host: IpAddr = raw
            .host
            .parse()
            .map_err(|_| invalid("host", format!("'{}' is not an IP address", raw.host)))?;
        let app_env = match raw.app_env.as_str() {
            "development" | "dev" | "" => AppEnv::Development,
            "production" | "prod" => AppEnv::Production,
            other => {
                return Err(invalid(
                    "app_env",
                    format!("'{other}' (expected development or production)"),
                ));
            }
        };
        let log_format = match raw.log_format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "log_format",
                    format!("'{other}' (expected text or json)"),
                ));
            }
        };
        let database_provider = match raw.database_provider.as_str() {
            "sqlite" => DatabaseProvider::Sqlite,
            "mongodb" => DatabaseProvider::Mongodb,
            other => {
                return Err(invalid(
                    "database_provider",
                    format!("'{other}' (expected sqlite or mongodb)"),
                ));
            }
        };
        if database_provider == DatabaseProvider::Mongodb && raw.database_url.trim().is_empty() {
            return Err(invalid(
                "database_url",
                "required when DATABASE_PROVIDER=mongodb",
            ));
        }
        if raw.data_dir.trim().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        let data_dir = PathBuf::from(&raw.data_dir);
        let (sqlite_url, sqlite_path) = if raw.sqlite_database_url.trim().is_empty() {
            let path = data_dir.join("whatsapp-api.db");
            (format!("file:{}", path.display()), path)
        } else {
            let path = sqlite_path_from_url(&raw.sqlite_database_url)
                .map_err(|why| invalid("sqlite_database_url", why))?;
            (raw.sqlite_database_url.clone(), path)
        };
        let jwt_expiration =
            parse_duration(&raw.jwt_expiration).map_err(|why| invalid("jwt_expiration", why))?;
        if raw.jwt_secret.is_empty() && app_env == AppEnv::Production {
            return Err(invalid("jwt_secret", "must be set when APP_ENV=production"));
        }
        if !raw.jwt_secret.is_empty() && raw.jwt_secret.len() < 32 && app_env == AppEnv::Production
        {
            return Err(invalid(
                "jwt_secret",
                "must be at least 32 characters when APP_ENV=production",
            ));
        }
        let secret_key = if raw.secret_key.trim().is_empty() {
            None
        } else {
            let bytes = hex::decode(raw.secret_key.trim())
                .map_err(|_| invalid("secret_key", "must be 64 hexadecimal characters"))?;
            Some(<[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                invalid("secret_key", "must be 64 hexadecimal characters (32 bytes)")
            })?)
        };
        if !raw.admin_email.contains('@') {
            return Err(invalid(
                "admin_email",
                format!("'{}' is not an email address", raw.admin_email),
            ));
        }
        if raw.admin_password.len() < 6 {
            return Err(invalid("admin_password", "must be at least 6 characters"));
        }
        let wa_engine: EngineKind = raw
            .wa_engine
            .parse()
            .map_err(|why| invalid("wa_engine", why))?;
        let positive = |key: &str, v: u64| -> Result<Duration, ConfigError> {
            if v == 0 {
                Err(invalid(key, "must be greater than 0"))
            } else {
                Ok(Duration::from_millis(v))
            }
        };
        let restart_backoff_base =
            positive("restart_backoff_base_ms", raw.restart_backoff_base_ms)?;
        let restart_backoff_max = positive("restart_backoff_max_ms", raw.restart_backoff_max_ms)?;
        if restart_backoff_max < restart_backoff_base {
            return Err(invalid(
                "restart_backoff_max_ms",
                "must not be smaller than RESTART_BACKOFF_BASE_MS",
            ));
        }
        let restart_window = positive("restart_window_ms", raw.restart_window_ms)?;
        let waba_chat_idle = positive("waba_chat_idle_ms", raw.waba_chat_idle_ms)?;
        let waba_media_timeout = positive("waba_media_timeout_ms", raw.waba_media_timeout_ms)?;
        let waba_media_retry = positive("waba_media_retry_ms", raw.waba_media_retry_ms)?;
        let waba_templates_ttl = positive("waba_templates_ttl_ms", raw.waba_templates_ttl_ms)?;
        if raw.waba_media_max_bytes < 1024 {
            return Err(invalid("waba_media_max_bytes", "must be at least 1024"));
        }
        if raw.waba_event_retention == 0 {
            return Err(invalid("waba_event_retention", "must be at least 1"));
        }
        if raw.restart_budget == 0 {
            return Err(invalid("restart_budget", "must be at least 1"));
        }
        let actor_call_timeout = positive("actor_call_timeout_ms", raw.actor_call_timeout_ms)?;
        let webhook_timeout = positive("webhook_timeout_ms", raw.webhook_timeout_ms)?;
        let stats_flush_interval = positive("stats_flush_ms", raw.stats_flush_ms)?;
        if raw.max_body_bytes < 1024 {
            return Err(invalid("max_body_bytes", "must be at least 1024"));
        }
        if raw.max_upload_bytes < 1024 {
            return Err(invalid("max_upload_bytes", "must be at least 1024"));
        }
        for (key, url) in [("waba_graph_base_url", &raw.waba_graph_base_url)] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(key, format!("'{url}' is not an http(s) URL")));
            }
        }
        let wacore_client_version = match raw.wacore_client_version.trim() {
            "" => None,
            text => Some(
                wagate_actors::engine::wacore::parse_version(text)
                    .map_err(|why| invalid("wacore_client_version", why))?,
            ),
        };
        let wacore_ws_url = match raw.wacore_ws_url.trim() {
            "" => None,
            url if url.starts_with("ws://") || url.starts_with("wss://") => Some(url.to_owned()),
            url => {
                return Err(invalid(
                    "wacore_ws_url",
                    format!("'{url}' is not a ws:// or wss:// URL"),
                ));
            }
        };
        let wacore_shutdown_timeout =
            positive("wacore_shutdown_timeout_ms", raw.wacore_shutdown_timeout_ms)?;
        let login_lockout = positive("login_lockout_ms", raw.login_lockout_ms)?;
        let cors_allowed_origins = parse_origins(&raw.cors_allowed_origins)
            .map_err(|why| invalid("cors_allowed_origins", why))?;
        let cluster = parse_cluster(&raw, database_provider)?;
        Ok(Config {
            host,
            port: raw.port,
            max_body_bytes: raw.max_body_bytes,
            max_upload_bytes: raw.max_upload_bytes,
            actor_call_timeout,
            webhook_timeout,
            webhook_auto_pause: (raw.webhook_auto_pause_ms > 0)
                .then(|| Duration::from_millis(raw.webhook_auto_pause_ms)),
            stats_flush_interval,
            app_env,
            data_dir,
            rust_log: raw.rust_log,
            log_format,
            log_dir: (!raw.log_dir.trim().is_empty()).then(|| PathBuf::from(raw.log_dir.trim())),
            env_file: None,
            database_provider,
            sqlite_path,
            sqlite_url,
            database_url: Secret(raw.database_url),
            cluster,
            jwt_secret: Secret(raw.jwt_secret),
            jwt_expiration,
            secret_key,
            admin_email: raw.admin_email,
            admin_password: Secret(raw.admin_password),
            admin_first_name: raw.admin_first_name,
            admin_last_name: raw.admin_last_name,
            wa_engine,
            sandbox_autopair: (raw.sandbox_autopair_ms > 0)
                .then(|| Duration::from_millis(raw.sandbox_autopair_ms)),
            wacore_client_version,
            wacore_ws_url,
            wacore_shutdown_timeout,
            restart_backoff_base,
            restart_backoff_max,
            restart_budget: raw.restart_budget,
            restart_window,
            allow_private_network_urls: raw.allow_private_network_urls,
            waba_graph_base_url: raw.waba_graph_base_url.trim_end_matches('/').to_owned(),
            waba_api_version: raw.waba_api_version,
            waba_chat_idle,
            waba_event_retention: raw.waba_event_retention,
            waba_media_timeout,
            waba_media_max_bytes: raw.waba_media_max_bytes,
            waba_media_retry,
            waba_templates_ttl,
            rate_limit_per_minute: raw.rate_limit_per_minute,
            login_max_failures: raw.login_max_failures,
            login_lockout,
            cors_allowed_origins,
        })
    }

    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }
}

/// The cluster keys, checked together: all of them in cluster mode, none needed
/// otherwise.
fn parse_cluster(
    raw: &RawConfig,
    provider: DatabaseProvider,
) -> Result<Option<ClusterConfig>, ConfigError> {
    match raw.cluster_mode.trim() {
        "" => return Ok(None),
        "mongodb" => {}
        other => {
            return Err(invalid(
                "cluster_mode",
                format!("'{other}' is not a cluster mode (use mongodb, or leave it empty)"),
            ));
        }
    }
    if provider != DatabaseProvider::Mongodb {
        return Err(invalid(
            "cluster_mode",
            "needs DATABASE_PROVIDER=mongodb: the nodes share one MongoDB replica set",
        ));
    }
    let node_id = raw.node_id.trim();
    let plain = !node_id.is_empty()
        && node_id.len() <= 64
        && node_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !plain {
        return Err(invalid(
            "node_id",
            "required in cluster mode: 1 to 64 letters, digits, '-', '_' or '.'",
        ));
    }
    let url = raw.node_advertise_url.trim().trim_end_matches('/');
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains(' ') {
        return Err(invalid(
            "node_advertise_url",
            "required in cluster mode: the http(s) URL other nodes reach this one at",
        ));
    }
    if raw.jwt_secret.is_empty() {
        return Err(invalid(
            "jwt_secret",
            "required in cluster mode: the same on every node, or tokens work on one node only",
        ));
    }
    if raw.secret_key.trim().is_empty() {
        return Err(invalid(
            "secret_key",
            "required in cluster mode: the same on every node, or API keys work on one node only",
        ));
    }
    if raw.cluster_secret.len() < 32 {
        return Err(invalid(
            "cluster_secret",
            "required in cluster mode: at least 32 characters, the same on every node",
        ));
    }
    let ms = |key: &str, v: u64| -> Result<Duration, ConfigError> {
        if v < 100 {
            Err(invalid(key, "must be at least 100"))
        } else {
            Ok(Duration::from_millis(v))
        }
    };
    let lease_ttl = ms("cluster_lease_ttl_ms", raw.cluster_lease_ttl_ms)?;
    let renew_every = ms("cluster_lease_renew_ms", raw.cluster_lease_renew_ms)?;
    let scan_every = ms("cluster_scan_ms", raw.cluster_scan_ms)?;
    if renew_every * 3 > lease_ttl {
        return Err(invalid(
            "cluster_lease_renew_ms",
            "must be at most a third of CLUSTER_LEASE_TTL_MS",
        ));
    }
    if scan_every >= lease_ttl {
        return Err(invalid(
            "cluster_scan_ms",
            "must be shorter than CLUSTER_LEASE_TTL_MS",
        ));
    }
    Ok(Some(ClusterConfig {
        node_id: node_id.to_owned(),
        advertise_url: url.to_owned(),
        secret: Secret(raw.cluster_secret.clone()),
        lease_ttl,
        renew_every,
        scan_every,
    }))
}

/// The file of `KEY=value` settings read from the working directory at start.
pub const DOTENV_FILE: &str = ".env";

/// A `.env` file read: its absolute path and its settings, in the file's order.
type DotEnv = (PathBuf, Vec<(String, String)>);

/// The settings of the `.env` file at `path`; `None` when there is no such file.
fn read_dotenv(path: &Path) -> Result<Option<DotEnv>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ConfigError(format!(
                "{}: cannot read it: {e}",
                path.display()
            )));
        }
    };
    let values =
        parse_dotenv(&text).map_err(|why| ConfigError(format!("{}: {why}", path.display())))?;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    Ok(Some((absolute, values)))
}

/// `KEY=value` lines as dotenvy reads them (`#` comments, quotes, `export`, `${VAR}`).
/// A line that is not a setting fails naming its number, never its text: it may hold a
/// secret.
fn parse_dotenv(text: &str) -> Result<Vec<(String, String)>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // dotenvy refuses a last line without a newline when it ends in a space.
    let text = if text.ends_with('\n') {
        text.to_owned()
    } else {
        format!("{text}\n")
    };
    match dotenvy::from_read_iter(text.as_bytes()).collect::<Result<Vec<_>, _>>() {
        Ok(values) => Ok(values),
        Err(dotenvy::Error::LineParse(..)) => Err(dotenv_error_line(&text)
            .unwrap_or_else(|| "is not a file of KEY=value lines".to_owned())),
        Err(e) => Err(e.to_string()),
    }
}

/// Where the first line dotenvy refuses is, found by reading the file one entry at a time
/// (an entry is one line, or several while a quote is open).
fn dotenv_error_line(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut start = 0;
    for end in 1..=lines.len() {
        let entry = lines.get(start..end)?.concat();
        match dotenvy::from_read_iter(entry.as_bytes()).collect::<Result<Vec<_>, _>>() {
            Ok(_) => start = end,
            // The file ended inside a quote: the entry goes on on the next line.
            Err(dotenvy::Error::LineParse(bad, _)) if bad.ends_with('\n') => {}
            Err(_) => return Some(format!("line {end} is not a KEY=value setting")),
        }
    }
    (start < lines.len())
        .then(|| format!("line {}: a quote opened here is never closed", start + 1))
}

/// A comma-separated list of origins (`https://app.example.com`) or `*`; empty = none.
fn parse_origins(text: &str) -> Result<Vec<String>, String> {
    let mut origins = Vec::new();
    for origin in text.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let well_formed = origin == "*"
            || ((origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin
                    .trim_end_matches('/')
                    .contains(|c: char| c.is_whitespace())
                && origin.is_ascii());
        if !well_formed {
            return Err(format!(
                "'{origin}' is not an origin (expected e.g. https://app.example.com, or *)"
            ));
        }
        origins.push(origin.trim_end_matches('/').to_owned());
    }
    Ok(origins)
}

/// `file:./data/x.db`, `sqlite://x.db`, `sqlite:x.db` or a bare path → the file path.
fn sqlite_path_from_url(url: &str) -> Result<PathBuf, String> {
    let url = url.trim();
    let rest = url
        .strip_prefix("file://")
        .or_else(|| url.strip_prefix("file:"))
        .or_else(|| url.strip_prefix("sqlite://"))
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() {
        return Err(format!("'{url}' names no file"));
    }
    Ok(PathBuf::from(path))
}

/// `30s`, `30m`, `24h`, `7d` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (use e.g. 30m, 24h, 7d)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("'{text}' has an unknown unit (use s, m, h or d)")),
    };
    if secs == 0 {
        return Err("must be longer than 0".into());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_overrides([]).expect("defaults");
        assert_eq!(c.port, 3000);
        assert_eq!(c.jwt_expiration, Duration::from_secs(86_400));
        assert_eq!(c.sqlite_path, PathBuf::from("./data/whatsapp-api.db"));
        assert_eq!(c.wa_engine, EngineKind::Wacore);
        assert!(c.sandbox_autopair.is_none());
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::from_overrides([("port", "abc".to_string())]).unwrap_err();
        assert!(e.to_string().contains("PORT"), "{e}");
        let e = Config::from_overrides([("jwt_expiration", "soon".to_string())]).unwrap_err();
        assert!(e.to_string().contains("JWT_EXPIRATION"), "{e}");
        let e = Config::from_overrides([("log_format", "xml".to_string())]).unwrap_err();
        assert!(e.to_string().contains("LOG_FORMAT"), "{e}");
        let e = Config::from_overrides([("wa_engine", "web".to_string())]).unwrap_err();
        assert!(e.to_string().contains("WA_ENGINE"), "{e}");
    }

    #[test]
    fn production_requires_a_strong_jwt_secret() {
        let e = Config::from_overrides([("app_env", "production".to_string())]).unwrap_err();
        assert!(e.to_string().contains("JWT_SECRET"), "{e}");
        let e = Config::from_overrides([
            ("app_env", "production".to_string()),
            ("jwt_secret", "short".to_string()),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("JWT_SECRET"), "{e}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("0h").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sqlite_urls() {
        assert_eq!(
            sqlite_path_from_url("file:./data/whatsapp-api.db"),
            Ok(PathBuf::from("./data/whatsapp-api.db"))
        );
        assert_eq!(
            sqlite_path_from_url("sqlite://x.db?mode=rwc"),
            Ok(PathBuf::from("x.db"))
        );
        assert!(sqlite_path_from_url("file:").is_err());
    }

    #[test]
    fn text_settings_accept_any_scalar() {
        let c = Config::from_overrides([
            ("admin_first_name", "true".to_string()),
            ("admin_password", "12345678".to_string()),
        ])
        .expect("config");
        assert_eq!(c.admin_first_name, "true");
        assert_eq!(c.admin_password.0, "12345678");
    }

    #[test]
    fn cors_origins_are_a_checked_list() {
        let c = Config::from_overrides([]).expect("defaults");
        assert!(c.cors_allowed_origins.is_empty());
        let c = Config::from_overrides([(
            "cors_allowed_origins",
            "https://a.example, http://b.example:8080/".to_string(),
        )])
        .expect("config");
        assert_eq!(
            c.cors_allowed_origins,
            ["https://a.example", "http://b.example:8080"]
        );
        let e = Config::from_overrides([("cors_allowed_origins", "a.example".to_string())])
            .expect_err("refused");
        assert!(e.0.contains("CORS_ALLOWED_ORIGINS"), "{e}");
    }

    #[test]
    fn dotenv_files_are_read_like_dotenvy() {
        let values = parse_dotenv(
            "\u{feff}A=1\n# a comment\n\nB=\"two words\" # and a comment\nexport C='3'\nD=\"multi\nline\"\nE=${A}x\nA=again",
        )
        .expect("a valid file");
        let get = |k: &str| {
            values
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("A"), Some("1"), "the first setting of a key counts");
        assert_eq!(get("B"), Some("two words"));
        assert_eq!(get("C"), Some("3"));
        assert_eq!(get("D"), Some("multi\nline"));
        assert_eq!(get("E"), Some("1x"));
    }

    #[test]
    fn dotenv_errors_name_the_line_not_its_text() {
        for (text, expected) in [
            (
                "A=1\nNOT A SETTING\nB=2\n",
                "line 2 is not a KEY=value setting",
            ),
            (
                "A=1\n\nB=secret value\n",
                "line 3 is not a KEY=value setting",
            ),
            (
                "A=\"multi\nline\"\nB=x y\n",
                "line 3 is not a KEY=value setting",
            ),
            ("A=1\r\n=2\r\n", "line 2 is not a KEY=value setting"),
            (
                "A=1\nB=\"open\nC=2\n",
                "line 2: a quote opened here is never closed",
            ),
        ] {
            let e = parse_dotenv(text).expect_err(text);
            assert_eq!(e, expected, "{text:?}");
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn log_dir_is_off_by_default() {
        let c = Config::from_overrides([]).expect("defaults");
        assert_eq!(c.log_dir, None);
        let c =
            Config::from_overrides([("log_dir", "/var/log/wagate".to_string())]).expect("config");
        assert_eq!(c.log_dir, Some(PathBuf::from("/var/log/wagate")));
    }

    #[test]
    fn cluster_mode_needs_its_keys_and_mongodb() {
        let c = Config::from_overrides([]).expect("defaults");
        assert!(c.cluster.is_none(), "a single server by default");
        let full = |extra: &[(&str, &str)]| {
            let mut all: Vec<(&str, String)> = vec![
                ("cluster_mode", "mongodb".into()),
                ("database_provider", "mongodb".into()),
                ("database_url", "mongodb://127.0.0.1:27017/wagate".into()),
                ("node_id", "n1".into()),
                ("node_advertise_url", "http://10.0.0.1:3000/".into()),
                ("cluster_secret", "x".repeat(32)),
                ("jwt_secret", "j".repeat(32)),
                ("secret_key", "ab".repeat(32)),
            ];
            for (k, v) in extra {
                all.retain(|(key, _)| key != k);
                all.push((k, (*v).to_owned()));
            }
            Config::from_overrides(all)
        };
        let c = full(&[]).expect("a cluster node");
        let cluster = c.cluster.expect("cluster");
        assert_eq!(cluster.node_id, "n1");
        assert_eq!(cluster.advertise_url, "http://10.0.0.1:3000");
        assert_eq!(cluster.lease_ttl, Duration::from_secs(20));
        assert_eq!(cluster.renew_every, Duration::from_secs(5));
        assert_eq!(cluster.scan_every, Duration::from_secs(2));
        for (extra, key) in [
            (("database_provider", "sqlite"), "CLUSTER_MODE"),
            (("cluster_mode", "etcd"), "CLUSTER_MODE"),
            (("node_id", ""), "NODE_ID"),
            (("node_id", "a/b"), "NODE_ID"),
            (
                ("node_advertise_url", "10.0.0.1:3000"),
                "NODE_ADVERTISE_URL",
            ),
            (("cluster_secret", "short"), "CLUSTER_SECRET"),
            (("jwt_secret", ""), "JWT_SECRET"),
            (("secret_key", ""), "SECRET_KEY"),
            (("cluster_lease_renew_ms", "8000"), "CLUSTER_LEASE_RENEW_MS"),
            (("cluster_scan_ms", "20000"), "CLUSTER_SCAN_MS"),
        ] {
            let e = full(&[extra]).expect_err(key);
            assert!(e.to_string().contains(key), "{extra:?}: {e}");
        }
    }

    #[test]
    fn empty_autopair_means_off() {
        let c = Config::from_overrides([("sandbox_autopair_ms", "".to_string())]).expect("config");
        assert!(c.sandbox_autopair.is_none());
        let c =
            Config::from_overrides([("sandbox_autopair_ms", "250".to_string())]).expect("config");
        assert_eq!(c.sandbox_autopair, Some(Duration::from_millis(250)));
    }
}
