//! The transport conformance suite over the embedded broker and over a real Mosquitto.

mod common;

use common::Fixture;
use edgeio_core::testing::conformance::transport as suite;

/// One test per behaviour and broker, so a failure names both, plus `run_all` on one
/// shared parent per broker.
macro_rules! behaviours {
    ($broker:ident, $fixture:expr, $guard:expr) => {
        mod $broker {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn run_all() {
                if !$guard {
                    return;
                }
                suite::run_all(&$fixture).await;
            }

            behaviours!(@each $fixture, $guard;
                child_up_is_reported,
                parent_sees_the_transport_child_id,
                messages_flow_both_ways_in_order,
                commands_reach_only_their_child,
                send_to_unknown_child_is_not_found,
                close_is_reported_as_child_lost,
                oversized_message_is_refused_and_link_survives,
                children_lists_connected,
            );
        }
    };
    (@each $fixture:expr, $guard:expr; $($behaviour:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $behaviour() {
                if !$guard {
                    return;
                }
                suite::$behaviour(&$fixture).await;
            }
        )*
    };
}

behaviours!(embedded, Fixture::embedded().await, true);
behaviours!(
    mosquitto,
    Fixture::mosquitto().await,
    edgeio_core::testing::require::mosquitto()
);
