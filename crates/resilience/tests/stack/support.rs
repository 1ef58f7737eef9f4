//! Test servers and call helpers shared by the resilience tests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use shop_resilience::classify::grpc_code;
use shop_resilience::deadline;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Code;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::{Layer, Service, ServiceExt};

/// Shared knobs and counters of a [`StatusService`].
#[derive(Debug, Default)]
pub struct Knobs {
    code: AtomicI32,
    delay_ms: AtomicU64,
    fail_first: AtomicUsize,
    pub calls: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    /// `grpc-timeout` of each call, as parsed.
    pub timeouts: Mutex<Vec<Option<Duration>>>,
    /// Whether the handler saw a task-local deadline.
    pub saw_deadline: Mutex<Vec<bool>>,
}

impl Knobs {
    pub fn answer(&self, code: Code) {
        self.code.store(code as i32, Ordering::SeqCst);
    }
    pub fn delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
    /// The first `n` calls answer UNAVAILABLE, then the configured code.
    pub fn fail_first(&self, n: usize) {
        self.fail_first.store(n, Ordering::SeqCst);
    }
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// A gRPC service named `test.Status` that answers any method with a chosen status.
#[derive(Debug, Clone, Default)]
pub struct StatusService {
    pub knobs: Arc<Knobs>,
}

impl NamedService for StatusService {
    const NAME: &'static str = "test.Status";
}

impl Service<http::Request<Body>> for StatusService {
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let knobs = self.knobs.clone();
        let timeout = req
            .headers()
            .get("grpc-timeout")
            .and_then(deadline::parse_grpc_timeout);
        knobs.timeouts.lock().unwrap().push(timeout);
        Box::pin(async move {
            knobs
                .saw_deadline
                .lock()
                .unwrap()
                .push(deadline::current().is_some());
            let n = knobs.calls.fetch_add(1, Ordering::SeqCst);
            let now = knobs.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            knobs.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let delay = knobs.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            knobs.in_flight.fetch_sub(1, Ordering::SeqCst);
            let code = if n < knobs.fail_first.load(Ordering::SeqCst) {
                Code::Unavailable
            } else {
                Code::from(knobs.code.load(Ordering::SeqCst))
            };
            Ok(tonic::Status::new(code, "test").into_http())
        })
    }
}

/// A running gRPC server on 127.0.0.1; `stop` shuts it down gracefully.
pub struct TestServer {
    pub addr: SocketAddr,
    pub knobs: Arc<Knobs>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(tower::layer::util::Identity::new()).await
    }

    /// Serves a [`StatusService`] behind `layer`.
    pub async fn start_with<L>(layer: L) -> Self
    where
        L: Layer<tonic::service::Routes> + Clone + Send + 'static,
        L::Service: Service<http::Request<Body>, Response = http::Response<Body>>,
        L::Service: Clone + Send + 'static,
        <L::Service as Service<http::Request<Body>>>::Future: Send + 'static,
        <L::Service as Service<http::Request<Body>>>::Error:
            Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = StatusService::default();
        let knobs = service.knobs.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .layer(layer)
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            knobs,
            shutdown: Some(tx),
            task,
        }
    }

    /// Graceful shutdown, cut short after a few seconds (a peer that never answers the
    /// GOAWAY ping, e.g. behind a blackhole, would hold it open forever).
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A raw unary gRPC request for `path` with an empty message.
pub fn request(path: &str) -> http::Request<Body> {
    let frame = Bytes::from_static(&[0, 0, 0, 0, 0]);
    http::Request::builder()
        .method("POST")
        .uri(format!("http://127.0.0.1{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Body::new(Full::new(frame)))
        .unwrap()
}

/// Calls `path` and returns the gRPC code (OK when the headers carry none).
pub async fn call<S>(svc: &S, path: &str) -> Code
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone,
    S::Error: std::fmt::Debug,
{
    let response = svc.clone().oneshot(request(path)).await.unwrap();
    grpc_code(&response).unwrap_or(Code::Ok)
}

/// A plain tonic channel to `addr`.
pub fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}
