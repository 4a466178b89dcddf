//! The local stack's settings (`.local/stack.env`, written by `make stack-up`) and clients pointed at it.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[derive(Debug, Clone)]
pub struct Stack {
    /// Every KEY=VALUE of `.local/stack.env`, to hand to a function's process.
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StackDown {
    #[error("the local AWS stack is not running ({0} is missing): start it with `make stack-up`")]
    NoSettings(String),
    #[error("the local AWS stack is not running ({name} does not answer at {url}): start it with `make stack-up`")]
    NotAnswering { name: &'static str, url: String },
    #[error("{path} has no {key}: restart the stack with `make stack-down stack-up`")]
    Incomplete { path: String, key: &'static str },
}

/// What the stack runs, and the setting that names where: the emulators, then the local Lambda service with the
/// rules stand-in in front of moto's data plane.
const ENDPOINTS: [(&str, &str); 4] = [
    ("DynamoDB Local", "AWS_ENDPOINT_URL_DYNAMODB"),
    ("moto server", "AWS_ENDPOINT_URL_IOT"),
    ("the local Lambda", "AWS_ENDPOINT_URL_LAMBDA"),
    ("the rules stand-in", "AWS_ENDPOINT_URL_IOT_DATA_PLANE"),
];

/// `.local/stack.env`, or `$STACK_STATE_DIR/stack.env` (relative to the repository's root) when that is set: two
/// stacks on other ports can then run from one checkout.
pub fn stack_env_path() -> PathBuf {
    let dir = std::env::var_os("STACK_STATE_DIR").map_or_else(|| PathBuf::from(".local"), PathBuf::from);
    repo_root().join(dir).join("stack.env")
}

/// The `KEY=VALUE` lines of a settings file such as `.local/stack.env`.
pub fn read_env(path: &Path) -> Result<BTreeMap<String, String>, StackDown> {
    let text = std::fs::read_to_string(path).map_err(|_| StackDown::NoSettings(path.display().to_string()))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect())
}

impl Stack {
    /// The running stack. Panics, naming `make stack-up`, when it is down: a test never skips silently.
    pub fn get() -> Self {
        match Self::load(&stack_env_path()) {
            Ok(stack) => stack,
            Err(e) => panic!("{e}"),
        }
    }

    /// Reads `path` and checks that everything the stack runs answers.
    pub fn load(path: &Path) -> Result<Self, StackDown> {
        let env = read_env(path)?;
        for (name, key) in ENDPOINTS {
            let url = env.get(key).ok_or(StackDown::Incomplete { path: path.display().to_string(), key })?;
            if !answers(url) {
                return Err(StackDown::NotAnswering { name, url: url.clone() });
            }
        }
        Ok(Self { env })
    }

    pub fn var(&self, key: &str) -> String {
        self.env.get(key).cloned().unwrap_or_else(|| panic!(".local/stack.env has no {key}: run `make stack-up`"))
    }

    /// SDK configuration for the emulators: dummy credentials, the stack's region, no SDK retries.
    pub fn sdk_config(&self) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.var("AWS_REGION")))
            .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(Credentials::new(
                self.var("AWS_ACCESS_KEY_ID"),
                self.var("AWS_SECRET_ACCESS_KEY"),
                None,
                None,
                "stack.env",
            )))
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build()
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        self.dynamodb_at(&self.var("AWS_ENDPOINT_URL_DYNAMODB"))
    }

    /// A DynamoDB client for another endpoint (a fault proxy in front of DynamoDB Local, say).
    pub fn dynamodb_at(&self, endpoint: &str) -> aws_sdk_dynamodb::Client {
        let config = aws_sdk_dynamodb::config::Builder::from(&self.sdk_config()).endpoint_url(endpoint).build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    /// The registry, for setting fleets up. moto's threaded server sometimes answers 500 when requests for the
    /// registry overlap (a dict mutated during iteration): this client retries, so fixtures do not flake.
    pub fn iot(&self) -> aws_sdk_iot::Client {
        let config = aws_sdk_iot::config::Builder::from(&self.sdk_config())
            .endpoint_url(self.var("AWS_ENDPOINT_URL_IOT"))
            .retry_config(
                aws_config::retry::RetryConfig::standard()
                    .with_max_attempts(6)
                    .with_initial_backoff(std::time::Duration::from_millis(20)),
            )
            .build();
        aws_sdk_iot::Client::from_conf(config)
    }

    pub fn iot_data(&self) -> aws_sdk_iotdataplane::Client {
        self.iot_data_at(&self.var("AWS_ENDPOINT_URL_IOT_DATA_PLANE"))
    }

    pub fn iot_data_at(&self, endpoint: &str) -> aws_sdk_iotdataplane::Client {
        let config = aws_sdk_iotdataplane::config::Builder::from(&self.sdk_config()).endpoint_url(endpoint).build();
        aws_sdk_iotdataplane::Client::from_conf(config)
    }

    /// The local Lambda's Invoke API.
    pub fn lambda(&self) -> aws_sdk_lambda::Client {
        self.lambda_at(&self.var("AWS_ENDPOINT_URL_LAMBDA"))
    }

    pub fn lambda_at(&self, endpoint: &str) -> aws_sdk_lambda::Client {
        let config = aws_sdk_lambda::config::Builder::from(&self.sdk_config()).endpoint_url(endpoint).build();
        aws_sdk_lambda::Client::from_conf(config)
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        let config = aws_sdk_sqs::config::Builder::from(&self.sdk_config())
            .endpoint_url(self.var("AWS_ENDPOINT_URL_SQS"))
            .build();
        aws_sdk_sqs::Client::from_conf(config)
    }
}

fn answers(url: &str) -> bool {
    let authority = url.trim_start_matches("http://").trim_start_matches("https://");
    let authority = authority.split('/').next().unwrap_or(authority);
    let addrs: Vec<SocketAddr> = authority.to_socket_addrs().map(Iterator::collect).unwrap_or_default();
    addrs.iter().any(|addr| TcpStream::connect_timeout(addr, Duration::from_secs(2)).is_ok())
}

/// A name no other test (nor an earlier run against the same stack) uses: `<prefix>-<pid>-<n>-<random>`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random: u32 = rand::random();
    format!("{prefix}-{}-{n}-{random:08x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_stack_names_make_stack_up() {
        let missing = Stack::load(Path::new("/nonexistent/stack.env")).err().map(|e| e.to_string());
        assert!(missing.is_some_and(|m| m.contains("make stack-up")));

        let dir = std::env::temp_dir().join(unique("stack-env"));
        std::fs::create_dir_all(&dir).expect("creating the settings directory");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let closed_port = listener.local_addr().map(|a| a.port()).expect("the bound port's number");
        drop(listener);
        let path = dir.join("stack.env");
        let text = format!(
            "AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:{closed_port}\nAWS_ENDPOINT_URL_IOT_DATA_PLANE=http://127.0.0.1:{closed_port}\n"
        );
        std::fs::write(&path, text).expect("writing the settings file");
        let down = Stack::load(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(down.contains("make stack-up") && down.contains("DynamoDB Local"), "{down}");
    }

    #[test]
    fn unique_names_differ_and_are_valid_names() {
        let a = unique("t");
        let b = unique("t");
        assert_ne!(a, b);
        assert!(shadow_core::ThingName::parse(a).is_ok());
    }
}
