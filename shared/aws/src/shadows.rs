//! The IoT data plane: reading and updating shadows.

use aws_sdk_iotdataplane::{Client, primitives::Blob};
use serde_json::Value;
use shadow_core::push::{DesiredState, Shadows};
use shadow_core::service::{FaultKind, ServiceError};
use shadow_core::{ShadowName, ThingName};

use crate::sdk::service_error;

#[derive(Debug, Clone)]
pub struct DataPlaneShadows {
    client: Client,
}

impl DataPlaneShadows {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// The data-plane client, for reads beyond what a push needs (the CLI's `shadow get`).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A data-plane client for this account. `AWS_ENDPOINT_URL_IOT_DATA_PLANE` (a local emulator) wins; then
    /// `configured` (`IOT_DATA_ENDPOINT`); else the account's `iot:Data-ATS` endpoint from DescribeEndpoint, once.
    pub async fn connect(
        config: &aws_config::SdkConfig,
        configured: Option<&str>,
        iot: &aws_sdk_iot::Client,
    ) -> Result<Self, ServiceError> {
        if std::env::var_os("AWS_ENDPOINT_URL_IOT_DATA_PLANE").is_some() {
            return Ok(Self::new(Client::new(config)));
        }
        let host = match configured.filter(|c| !c.trim().is_empty()) {
            Some(host) => host.trim().to_owned(),
            None => iot
                .describe_endpoint()
                .endpoint_type("iot:Data-ATS")
                .send()
                .await
                .map_err(|e| service_error("DescribeEndpoint", e))?
                .endpoint_address
                .ok_or_else(|| {
                    ServiceError::new(
                        "DescribeEndpoint",
                        FaultKind::Rejected,
                        None,
                        "the answer has no endpointAddress",
                    )
                })?,
        };
        let url = if host.starts_with("https://") { host } else { format!("https://{host}") };
        let data_plane = aws_sdk_iotdataplane::config::Builder::from(config).endpoint_url(url).build();
        Ok(Self::new(Client::from_conf(data_plane)))
    }
}

impl Shadows for DataPlaneShadows {
    async fn desired(
        &self,
        thing: &ThingName,
        shadow: Option<&ShadowName>,
    ) -> Result<Option<DesiredState>, ServiceError> {
        let got = self
            .client
            .get_thing_shadow()
            .thing_name(thing.as_str())
            .set_shadow_name(shadow.map(|s| s.to_string()))
            .send()
            .await;
        let output = match got {
            Ok(output) => output,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => return Ok(None),
            Err(e) => return Err(service_error("GetThingShadow", e)),
        };
        let payload = output.payload.as_ref().map(Blob::as_ref).unwrap_or_default();
        // A document that is not JSON will not become JSON on a retry: fail the thing rather than hand it on forever.
        let document: Value = serde_json::from_slice(payload).map_err(|e| {
            ServiceError::new("GetThingShadow", FaultKind::Rejected, Some("UnreadableDocument".into()), e)
        })?;
        let section = |key: &str| document.get("state").and_then(|s| s.get(key)).cloned().unwrap_or_default();
        let metadata = document.get("metadata").and_then(|m| m.get("desired")).cloned().unwrap_or_default();
        let version = document.get("version").and_then(Value::as_u64);
        Ok(Some(DesiredState { state: section("desired"), metadata, version, reported: section("reported") }))
    }

    async fn update(&self, thing: &ThingName, shadow: Option<&ShadowName>, document: &str) -> Result<(), ServiceError> {
        self.client
            .update_thing_shadow()
            .thing_name(thing.as_str())
            .set_shadow_name(shadow.map(|s| s.to_string()))
            .payload(Blob::new(document.as_bytes().to_vec()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| service_error("UpdateThingShadow", e))
    }
}
