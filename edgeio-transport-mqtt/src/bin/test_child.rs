//! A test helper: connects an [`MqttChild`] to a broker, prints `ready` on stdout once
//! connected, then waits until it is killed. Tests kill it with SIGKILL to show that a child
//! that dies without a clean disconnect is reported lost through its last will.
//!
//! Usage: `edgeio-mqtt-test-child BROKER_URL NODE_ID`

use edgeio_core::model::Resources;
use edgeio_core::wire::{Envelope, Message, NodeStatus};
use edgeio_transport_mqtt::{ChildConfig, MqttChild};
use std::io::Write;
use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [broker, node] = args.as_slice() else {
        eprintln!("usage: edgeio-mqtt-test-child BROKER_URL NODE_ID");
        return ExitCode::from(2);
    };
    let announce = Envelope::new(
        node.clone(),
        Message::NodeStatus(NodeStatus {
            free: Resources::ZERO,
            total: Resources::ZERO,
            instances: Vec::new(),
            usage: None,
        }),
    );
    let child =
        match MqttChild::connect(ChildConfig::new(node.clone(), broker.clone()), announce).await {
            Ok(child) => child,
            Err(e) => {
                eprintln!("edgeio-mqtt-test-child: {e}");
                return ExitCode::from(1);
            }
        };
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "ready");
    let _ = stdout.flush();
    // Runs until killed; the loop keeps the connection (and its keep-alive) going.
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        let _ = &child;
    }
}
