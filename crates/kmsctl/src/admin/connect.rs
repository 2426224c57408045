//! Reaching a kmsd admin API: endpoint failover, leader hints, TLS, server warnings.
//!
//! A call goes to the endpoints of `--server` in order. An endpoint that cannot be connected
//! to, or answers UNAVAILABLE, is skipped for the next one. A node that answers
//! FAILED_PRECONDITION with an `x-kmsd-leader: id=N addr=HOST:PORT` trailer (a call that must
//! run on the leader) is left for the hinted leader, up to [`MAX_LEADER_HOPS`] times. Any other
//! answer is final. A server's `x-kmsd-warning` header is printed to stderr.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use kms_api::admin::v1::admin_client::AdminClient;
use kms_tls::TlsFiles;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Response, Status};

use super::{AdminError, ConnectArgs};

/// Most leader hints one call follows.
pub const MAX_LEADER_HOPS: usize = 3;
/// Trailer naming the leader (see the admin proto).
pub const LEADER_HINT_HEADER: &str = "x-kmsd-leader";
/// Header carrying a warning for the user.
pub const WARNING_HEADER: &str = "x-kmsd-warning";
/// Longest a TCP (and TLS) connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Budget of a call that does not wait for anything in the cluster.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest message accepted from kmsd (a page of 10 000 clients is a few MB).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Where and how to reach kmsd.
#[derive(Debug, Clone)]
pub struct Connector {
    endpoints: Vec<String>,
    tls: Option<ClientTlsConfig>,
}

/// A successful answer and the endpoint that gave it.
#[derive(Debug)]
pub struct Answer<T> {
    /// The answer.
    pub message: T,
    /// The endpoint (host:port) that answered.
    pub endpoint: String,
}

impl Connector {
    /// One connector per endpoint, with the same TLS settings (`health` and `status` ask
    /// every endpoint given, not only the first that answers).
    pub fn each_endpoint(&self) -> Vec<Connector> {
        self.endpoints
            .iter()
            .map(|e| Connector {
                endpoints: vec![e.clone()],
                tls: self.tls.clone(),
            })
            .collect()
    }

    /// The endpoints, as given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// From the command line: the endpoints of `--server`, and TLS when `--ca/--cert/--key`
    /// are given (all three or none).
    pub fn from_args(args: &ConnectArgs) -> Result<Connector, AdminError> {
        let endpoints: Vec<String> = args
            .server
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(AdminError::Usage("--server names no endpoint".into()));
        }
        let tls = match (&args.ca, &args.cert, &args.key) {
            (None, None, None) => None,
            (Some(ca), Some(cert), Some(key)) => {
                Some(kms_tls::client_config(&TlsFiles::new(ca, cert, key), None)?)
            }
            _ => {
                return Err(AdminError::Usage(
                    "mutual TLS needs all three of --ca, --cert and --key (or KMSCTL_CA, \
                     KMSCTL_CERT, KMSCTL_KEY)"
                        .into(),
                ));
            }
        };
        Ok(Connector { endpoints, tls })
    }

    /// A connector for `endpoints` without TLS (tests).
    pub fn plain(endpoints: Vec<String>) -> Connector {
        Connector {
            endpoints,
            tls: None,
        }
    }

    /// Connect to one endpoint.
    async fn client(&self, endpoint: &str) -> Result<AdminClient<Channel>, String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let uri = if endpoint.contains("://") {
            endpoint.to_string()
        } else {
            format!("{scheme}://{endpoint}")
        };
        let mut ep = Endpoint::from_shared(uri)
            .map_err(|e| format!("invalid address: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            ep = ep
                .tls_config(tls.clone())
                .map_err(|e| format!("TLS: {e}"))?;
        }
        let channel = ep.connect().await.map_err(|e| {
            let mut text = error_chain(&e);
            if self.tls.is_none() && text.contains("connection") {
                text.push_str(" (if this kmsd requires TLS, give --ca, --cert and --key)");
            }
            text
        })?;
        Ok(AdminClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Make a call (see the module doc). `f` issues the call on a client; `timeout` bounds
    /// each attempt until the answer's headers arrive (a stream may run longer).
    pub async fn call<Req, Resp, F, Fut>(
        &self,
        req: Req,
        timeout: Duration,
        f: F,
    ) -> Result<Answer<Resp>, AdminError>
    where
        Req: Clone,
        F: Fn(AdminClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let mut queue: VecDeque<String> = self.endpoints.iter().cloned().collect();
        let mut tried: Vec<(String, String)> = Vec::new();
        let mut hops = 0;
        while let Some(endpoint) = queue.pop_front() {
            let client = match self.client(&endpoint).await {
                Ok(c) => c,
                Err(e) => {
                    tried.push((endpoint, e));
                    continue;
                }
            };
            let result = tokio::time::timeout(timeout, f(client, Request::new(req.clone()))).await;
            let status = match result {
                Ok(Ok(resp)) => {
                    print_warning(resp.metadata());
                    return Ok(Answer {
                        message: resp.into_inner(),
                        endpoint,
                    });
                }
                Ok(Err(status)) => status,
                Err(_) => {
                    tried.push((endpoint, format!("no answer within {}s", timeout.as_secs())));
                    continue;
                }
            };
            print_warning(status.metadata());
            match status.code() {
                Code::FailedPrecondition => {
                    if let Some(leader) = leader_hint(&status)
                        && hops < MAX_LEADER_HOPS
                        && leader != endpoint
                    {
                        hops += 1;
                        eprintln!("kmsctl: {endpoint} is not the leader; retrying at {leader}");
                        queue.push_front(leader);
                        continue;
                    }
                    return Err(AdminError::from_status(endpoint, status));
                }
                Code::Unavailable if !status.message().is_empty() => {
                    tried.push((endpoint, status.message().to_string()));
                }
                Code::Unavailable => tried.push((endpoint, "unavailable".into())),
                // The connection broke before kmsd answered (e.g. clear text to a TLS port,
                // or TLS refused by the server): a transport failure, not kmsd's answer.
                Code::Cancelled | Code::Unknown | Code::Internal
                    if is_transport_failure(&status) =>
                {
                    let mut why = format!("connection failed ({})", status.message());
                    if self.tls.is_none() {
                        why.push_str("; if this kmsd requires TLS, give --ca, --cert and --key");
                    }
                    tried.push((endpoint, why));
                }
                _ => return Err(AdminError::from_status(endpoint, status)),
            }
        }
        Err(AdminError::Unreachable { tried })
    }
}

/// Whether a status was made by the client's transport (a broken or refused connection)
/// rather than sent by kmsd: transport statuses carry the underlying error as their source,
/// statuses decoded from kmsd's answer carry none, and kmsd never sends CANCELLED.
fn is_transport_failure(status: &Status) -> bool {
    status.code() == Code::Cancelled
        || (matches!(status.code(), Code::Unknown | Code::Internal)
            && std::error::Error::source(status).is_some())
}

/// The leader address of an `x-kmsd-leader: id=N addr=HOST:PORT` trailer.
pub fn leader_hint(status: &Status) -> Option<String> {
    let v = status.metadata().get(LEADER_HINT_HEADER)?.to_str().ok()?;
    parse_leader_hint(v)
}

/// The `addr` of a leader hint value.
pub fn parse_leader_hint(v: &str) -> Option<String> {
    v.split_whitespace()
        .find_map(|part| part.strip_prefix("addr="))
        .filter(|a| !a.is_empty())
        .map(str::to_string)
}

fn print_warning(md: &tonic::metadata::MetadataMap) {
    if let Some(w) = md.get(WARNING_HEADER).and_then(|v| v.to_str().ok()) {
        eprintln!("kmsctl: warning from kmsd: {w}");
    }
}

/// An error with its causes, `a: b: c`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_hints_parse() {
        assert_eq!(
            parse_leader_hint("id=2 addr=10.0.0.2:1689").as_deref(),
            Some("10.0.0.2:1689")
        );
        assert_eq!(
            parse_leader_hint("addr=[::1]:1689 id=2").as_deref(),
            Some("[::1]:1689")
        );
        assert_eq!(parse_leader_hint("id=2 addr="), None);
        assert_eq!(parse_leader_hint("id=2"), None);
        let mut s = Status::failed_precondition("not the leader");
        s.metadata_mut()
            .insert(LEADER_HINT_HEADER, "id=3 addr=h:1".parse().unwrap());
        assert_eq!(leader_hint(&s).as_deref(), Some("h:1"));
    }

    #[test]
    fn tls_needs_all_three_files() {
        let args = ConnectArgs {
            server: vec!["127.0.0.1:1689".into()],
            ca: Some("ca.crt".into()),
            cert: None,
            key: None,
        };
        assert!(matches!(
            Connector::from_args(&args),
            Err(AdminError::Usage(_))
        ));
        let args = ConnectArgs {
            server: vec![" ".into()],
            ..ConnectArgs::default()
        };
        assert!(matches!(
            Connector::from_args(&args),
            Err(AdminError::Usage(_))
        ));
    }

    #[tokio::test]
    async fn unreachable_endpoints_are_all_reported() {
        // Bind and drop to get ports that refuse connections.
        let mut addrs = Vec::new();
        for _ in 0..2 {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            addrs.push(l.local_addr().unwrap().to_string());
        }
        let c = Connector::plain(addrs.clone());
        let err = c
            .call(
                kms_api::admin::v1::StatusRequest { version: 1 },
                CALL_TIMEOUT,
                |mut client, req| async move { client.status(req).await },
            )
            .await
            .unwrap_err();
        match &err {
            AdminError::Unreachable { tried } => {
                assert_eq!(tried.len(), 2);
                assert_eq!(tried[0].0, addrs[0]);
            }
            e => panic!("{e}"),
        }
        assert_eq!(err.class(), crate::exit::ExitClass::Connection);
    }
}
