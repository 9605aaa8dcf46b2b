//! The ingest Lambda: builds its clients once and hands the handler to the runtime.

use std::sync::Arc;

use eye_shared::adapters::aws::{SqsClient, sdk_config, sqs::SqsQueue};
use eye_shared::api::{Api, GatewayAuth};
use lambda_http::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    eye_shared::lambda::init_json_logs();
    let queue_url = std::env::var("EYE_QUEUE_URL").map_err(|_| "EYE_QUEUE_URL is not set")?;
    let keys = eye_ingest::gateway_keys(&[
        std::env::var("EYE_API_KEY_APPS").ok().as_deref(),
        std::env::var("EYE_EXTRA_API_KEY_APPS").ok().as_deref(),
    ])?;
    let sdk = sdk_config(None).await;
    let queue = SqsQueue::new(SqsClient::new(&sdk), queue_url, Arc::default());
    let api = Api::new(Arc::new(GatewayAuth::new(keys)), Arc::new(queue));
    lambda_http::run(service_fn(|req| {
        let api = &api;
        async move { Ok::<_, Error>(eye_ingest::handle(api, req).await) }
    }))
    .await
}
