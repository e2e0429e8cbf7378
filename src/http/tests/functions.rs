//! `run FUNCTION...`: a process serves its functions' routes only, and every process its
//! operations endpoints (probes and metrics).

use super::*;
use crate::app::Functions;

async fn running(functions: Functions) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.functions = functions;
    let pipeline = Pipeline::start(cfg).await.unwrap();
    let router = crate::http::router_for(pipeline.state.clone(), functions);
    TestApp {
        pipeline,
        router,
        dir,
    }
}

fn get(uri: &str) -> Request<Body> {
    Request::builder().uri(uri).body(Body::empty()).unwrap()
}

fn telemetry() -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri("/api/telemetry")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"deviceId":"d","metrics":{"t":1}}"#))
        .unwrap()
}

#[tokio::test]
async fn each_function_serves_only_its_routes_and_every_process_its_probes() {
    let ingest = running(Functions {
        ingest: true,
        ..Functions::NONE
    })
    .await;
    assert_eq!(
        ingest.call(telemetry()).await.status,
        StatusCode::UNAUTHORIZED,
        "ingest is there"
    );
    assert_eq!(
        ingest.admin("GET", "/api/alerts", None).await.status,
        StatusCode::NOT_FOUND
    );

    let web = running(Functions {
        web: true,
        ..Functions::NONE
    })
    .await;
    assert_eq!(
        web.admin("GET", "/api/alerts", None).await.status,
        StatusCode::OK,
        "web is there"
    );
    assert_eq!(web.call(telemetry()).await.status, StatusCode::NOT_FOUND);

    let workers = running(Functions {
        analyze: true,
        process: true,
        ..Functions::NONE
    })
    .await;
    for app in [&ingest, &web, &workers] {
        for uri in ["/healthz", "/readyz", "/metrics"] {
            assert_eq!(app.call(get(uri)).await.status, StatusCode::OK, "{uri}");
        }
    }
    assert_eq!(workers.call(telemetry()).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn notify_without_a_webhook_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.functions = Functions {
        notify: true,
        ..Functions::NONE
    };
    let err = Pipeline::start(cfg).await.err().expect("notify needs a webhook");
    assert!(err.to_string().contains("IOTSTREAM_WEBHOOK_URL"), "{err}");
}
