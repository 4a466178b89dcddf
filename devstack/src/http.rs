//! The small HTTP plumbing the local stand-ins share: a loopback server that hands each whole request to a handler,
//! and forwarding to an upstream emulator.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, EXPECT, TRANSFER_ENCODING};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode, server::conn::http1, service::service_fn};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub type Reply = Response<Full<Bytes>>;

/// A server on a free loopback port; it stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `handler` on 127.0.0.1, one task per connection; the handler gets each request with its whole body.
pub async fn serve<H, Fut>(handler: H) -> Server
where
    H: Fn(Parts, Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    serve_at(addr, handler).await.unwrap_or_else(|e| panic!("bind {addr}: {e}"))
}

/// Serves `handler` on `addr` (a fixed port for a long-running stand-in); fails when the port is taken.
pub async fn serve_at<H, Fut>(addr: SocketAddr, handler: H) -> std::io::Result<Server>
where
    H: Fn(Parts, Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let handler = Arc::new(handler);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let handler = handler.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        Ok::<_, Infallible>(handler(parts, body).await)
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(Server { addr, task })
}

/// A reply with `status` and a body.
pub fn reply(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

/// An emulator that requests are forwarded to, unchanged (signatures included: the emulators do not check them).
pub struct Upstream {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Upstream {
    pub fn new(base: &str) -> Self {
        Self { base: base.trim_end_matches('/').to_owned(), client: Client::builder(TokioExecutor::new()).build_http() }
    }

    /// Sends the request on and returns the whole answer; a failure to reach the upstream is a 502.
    pub async fn forward(&self, parts: &Parts, body: Bytes) -> (hyper::http::response::Parts, Bytes) {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = Request::builder().method(parts.method.clone()).uri(format!("{}{path}", self.base));
        for (name, value) in &parts.headers {
            request = request.header(name, value);
        }
        let answer = match request.body(Full::new(body)) {
            Ok(request) => self.client.request(request).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match answer {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                (parts, body.collect().await.map(|b| b.to_bytes()).unwrap_or_default())
            }
            Err(e) => {
                let (parts, _) = reply(StatusCode::BAD_GATEWAY, Bytes::new()).into_parts();
                (parts, Bytes::from(format!("upstream failed: {e}")))
            }
        }
    }

    /// A GET of the request's path and query with its headers (its signature names the account and the service) but
    /// without its body: to read the resource the request is about to change, or has changed.
    pub async fn get(&self, parts: &Parts) -> (hyper::http::response::Parts, Bytes) {
        let (mut get, ()) = Request::new(()).into_parts();
        get.method = Method::GET;
        get.uri = parts.uri.clone();
        get.headers = parts.headers.clone();
        for name in [CONTENT_LENGTH, CONTENT_TYPE, CONTENT_ENCODING, TRANSFER_ENCODING, EXPECT] {
            get.headers.remove(name);
        }
        get.headers.remove("content-md5");
        self.forward(&get, Bytes::new()).await
    }
}

/// Requests on their way to an emulator, each with when it came, its method and path, and its body.
#[derive(Clone, Default)]
pub struct Seen(Arc<Mutex<Vec<(Instant, String, Bytes)>>>);

impl Seen {
    /// Every request seen so far, oldest first.
    pub fn requests(&self) -> Vec<(Instant, String, Bytes)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A proxy in front of `upstream` that forwards every request unchanged and notes it in `seen`.
pub async fn watching(upstream: &str, seen: Seen) -> Server {
    let upstream = Arc::new(Upstream::new(upstream));
    serve(move |parts, body| {
        let (upstream, seen) = (upstream.clone(), seen.clone());
        async move {
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let request = (Instant::now(), format!("{} {path}", parts.method), body.clone());
            seen.0.lock().unwrap_or_else(|e| e.into_inner()).push(request);
            let (answer, body) = upstream.forward(&parts, body).await;
            Response::from_parts(answer, Full::new(body))
        }
    })
    .await
}
