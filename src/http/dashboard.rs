//! `GET /`: the dashboard (CONTRACT §2.3), a static page that reads the query API with the admin
//! token: active alerts (with acknowledge), devices with their latest values, recent forecasts,
//! refreshed every 2 s. The assets hold no data, so they need no token; the API calls do.
//! A strict Content-Security-Policy: scripts and styles from this origin only, no inline code,
//! no frames, requests to this origin only.

use axum::http::header;
use axum::response::IntoResponse;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

pub async fn page() -> impl IntoResponse {
    asset("text/html; charset=utf-8", include_str!("dashboard/index.html"))
}

pub async fn script() -> impl IntoResponse {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("dashboard/dashboard.js"),
    )
}

pub async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", include_str!("dashboard/dashboard.css"))
}
