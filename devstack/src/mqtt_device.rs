//! A device's side of the local stack's MQTT: a connection with the thing's own certificate from the local CA
//! (as AWS IoT Core requires, mutual TLS), the shadow topics to subscribe and publish to, and the messages that come
//! back. The tests and `fleet-local devices` use it.

use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeReasonCode, TlsConfiguration,
    Transport,
};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::mqtt_ca::{CaError, Issued, LocalCa};

/// The broker as `.local/stack.env` names it, and the CA that signs its certificate.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub ca: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("the stack's settings have no {0}: restart the stack with `make stack-down stack-up`")]
    Setting(&'static str),
    #[error("the local CA")]
    Ca(#[from] CaError),
    #[error("the broker refused the connection: {0}")]
    Refused(String),
    #[error("the broker's connection ended: {0}")]
    Closed(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the broker refused the subscription to {0}")]
    SubscriptionRefused(String),
}

impl Endpoint {
    /// The stack's broker, from its settings (`IOT_MQTT_ENDPOINT`, `IOT_MQTT_PORT`, `LOCAL_MQTT_DIR`).
    pub fn of(stack: &crate::Stack) -> Result<(Self, LocalCa), DeviceError> {
        let setting = |key: &'static str| stack.env.get(key).cloned().ok_or(DeviceError::Setting(key));
        let host = setting("IOT_MQTT_ENDPOINT")?;
        let port = setting("IOT_MQTT_PORT")?.parse().map_err(|_| DeviceError::Setting("IOT_MQTT_PORT"))?;
        let ca = LocalCa::open(std::path::Path::new(&setting("LOCAL_MQTT_DIR")?))?;
        Ok((Self { host, port, ca: ca.certificate().to_owned() }, ca))
    }
}

/// What a device's connection hands on.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A message on a topic; its payload as JSON (`Value::Null` when it is not JSON).
    Message {
        topic: String,
        payload: Value,
    },
    SubscribeAcknowledged {
        refused: bool,
    },
    Connected {
        session_present: bool,
    },
    Disconnected(String),
}

/// A connected device.
pub struct Device {
    pub client: AsyncClient,
    incoming: mpsc::UnboundedReceiver<Incoming>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Device {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// MQTT options for `client_id` over TLS with `credentials`; `clean_session` false keeps the session (subscriptions
/// and QoS 1 messages) while the device is away.
pub fn options(client_id: &str, endpoint: &Endpoint, credentials: &Issued, clean_session: bool) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, &endpoint.host, endpoint.port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(clean_session);
    options.set_max_packet_size(1 << 20, 1 << 20);
    options.set_transport(Transport::Tls(TlsConfiguration::Simple {
        ca: endpoint.ca.clone().into_bytes(),
        alpn: None,
        client_auth: Some((credentials.certificate.clone().into_bytes(), credentials.private_key.clone().into_bytes())),
    }));
    options
}

/// Polls until the broker answers the connect; the first error ends it (no reconnect: a refusal is an answer).
async fn connected(eventloop: &mut EventLoop, within: Duration) -> Result<bool, DeviceError> {
    let polled = tokio::time::timeout(within, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {
                    return Ok(ack.session_present);
                }
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    return Err(DeviceError::Refused(format!("{:?}", ack.code)));
                }
                Ok(_) => {}
                Err(e) => return Err(DeviceError::Refused(e.to_string())),
            }
        }
    })
    .await;
    polled.unwrap_or(Err(DeviceError::Timeout(within)))
}

impl Device {
    /// Connects as `client_id` with `credentials`; fails when the broker refuses (a certificate it does not trust).
    pub async fn connect(
        client_id: &str,
        endpoint: &Endpoint,
        credentials: &Issued,
        clean_session: bool,
    ) -> Result<(Self, bool), DeviceError> {
        let (client, mut eventloop) = AsyncClient::new(options(client_id, endpoint, credentials, clean_session), 100);
        let session_present = connected(&mut eventloop, Duration::from_secs(10)).await?;
        let (sender, incoming) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let event = match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(publish))) => Incoming::Message {
                        topic: publish.topic.clone(),
                        payload: serde_json::from_slice(&publish.payload).unwrap_or(Value::Null),
                    },
                    Ok(Event::Incoming(Packet::SubAck(ack))) => Incoming::SubscribeAcknowledged {
                        refused: ack.return_codes.contains(&SubscribeReasonCode::Failure),
                    },
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        Incoming::Connected { session_present: ack.session_present }
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = sender.send(Incoming::Disconnected(e.to_string()));
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                if sender.send(event).is_err() {
                    return;
                }
            }
        });
        Ok((Self { client, incoming, task }, session_present))
    }

    /// Subscribes to `topics` at QoS 1 and waits for the broker's acknowledgement.
    pub async fn subscribe(&mut self, topics: &[String]) -> Result<(), DeviceError> {
        for topic in topics {
            self.client
                .subscribe(topic.clone(), QoS::AtLeastOnce)
                .await
                .map_err(|e| DeviceError::Closed(e.to_string()))?;
            let within = Duration::from_secs(10);
            loop {
                match tokio::time::timeout(within, self.incoming.recv()).await {
                    Ok(Some(Incoming::SubscribeAcknowledged { refused: false })) => break,
                    Ok(Some(Incoming::SubscribeAcknowledged { refused: true })) => {
                        return Err(DeviceError::SubscriptionRefused(topic.clone()));
                    }
                    Ok(Some(Incoming::Disconnected(e))) => return Err(DeviceError::Closed(e)),
                    Ok(Some(_)) => {}
                    Ok(None) => return Err(DeviceError::Closed("the connection's task ended".into())),
                    Err(_) => return Err(DeviceError::Timeout(within)),
                }
            }
        }
        Ok(())
    }

    /// Publishes `payload` at QoS 1.
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) -> Result<(), DeviceError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .map_err(|e| DeviceError::Closed(e.to_string()))
    }

    /// The next message on `topic` within `within`; messages on other topics before it are dropped.
    pub async fn next_on(&mut self, topic: &str, within: Duration) -> Result<Value, DeviceError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.incoming.recv()).await {
                Ok(Some(Incoming::Message { topic: t, payload })) if t == topic => return Ok(payload),
                Ok(Some(_)) => {}
                Ok(None) => return Err(DeviceError::Closed("the connection's task ended".into())),
                Err(_) => return Err(DeviceError::Timeout(within)),
            }
        }
    }

    /// The next message on any topic within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Incoming> {
        tokio::time::timeout(within, self.incoming.recv()).await.ok().flatten()
    }

    /// Disconnects cleanly (a persistent session stays on the broker).
    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
