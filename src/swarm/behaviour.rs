//! The composed libp2p behaviour and the tuning of each part.
//!
//! Gossipsub's defaults assume a mesh of six peers and a public network; a
//! render farm is 2 to 20 machines on one LAN. The numbers below are chosen
//! for that, and each says why:
//!
//! - `mesh_n = 4`, `mesh_n_low = 1`, `mesh_n_high = 8`, `mesh_outbound_min = 1`,
//!   `gossip_lazy = 4`: with two or three nodes the mesh is simply "everyone"
//!   and a node with a single peer is content instead of grafting in vain
//!   every heartbeat; at twenty nodes, four mesh peers forward each message,
//!   which keeps duplicates modest. The constraints gossipsub checks
//!   (`outbound_min <= n_low <= n <= n_high`, `2 * outbound_min <= n`) hold.
//! - `flood_publish = true`: the author sends to *every* connected subscriber
//!   (score permitting), so in a farm where everyone is connected to everyone
//!   a message needs no forwarding at all; the mesh only helps peers that are
//!   not directly connected.
//! - heartbeat 500 ms after an initial 100 ms (default: 1 s after 5 s), so a
//!   fresh node grafts its mesh before its first heartbeat message;
//!   `history_length = 12`, `history_gossip = 4`: the message cache keeps
//!   6 s of messages, so a message the node takes a while to validate can
//!   still be forwarded when it is accepted.
//! - `validate_messages()` with `ValidationMode::Strict` and signed messages:
//!   nothing is forwarded until the node has decoded it and said Accept; a
//!   Reject counts against the *forwarding* peer's score (P4).
//! - Peer scoring: only P4 (invalid messages, weight -10, squared, decaying to
//!   nothing over ~10 minutes) and a small capped P2 (first deliveries,
//!   +0.1 each, at most +1 per topic) are on. Mesh-delivery penalties (P3)
//!   are off because a quiet topic in a 3-node farm would punish honest
//!   peers; IP colocation (P6) is off because a farm is many peers on one
//!   subnet and tests run many nodes on 127.0.0.1. Thresholds gossip -20,
//!   publish -40, graylist -80: one rejected message (-10) costs nothing,
//!   two (-40) stop our publishing to the peer, three (-90) graylist it, so
//!   a peer that keeps sending garbage is ignored altogether. The node may
//!   also set an application score (weight 1) for misbehaviour seen outside
//!   gossip, such as a corrupt chunk.

use std::collections::HashMap;
use std::time::Duration;

use libp2p::allow_block_list::{self, BlockedPeers};
use libp2p::gossipsub::{
    self, IdentTopic, MessageAuthenticity, PeerScoreParams, PeerScoreThresholds, TopicScoreParams,
    ValidationMode,
};
use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{StreamProtocol, identify, mdns, ping, request_response};

use super::codec::RawCodec;
use super::requests::Requests;
use super::{SwarmConfig, SwarmError};

/// The identify protocol version string; peers announcing another are not of
/// this farm and are disconnected.
pub(super) const IDENTIFY_VERSION: &str = "/renderswarm/id/1";

/// Bytes of gossipsub envelope (signature, key, topic, seqno) allowed on top of
/// the payload limit `max_gossip_bytes`.
pub(super) const GOSSIP_ENVELOPE: usize = 1024;

/// Every protocol a node speaks.
#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    pub(super) block: allow_block_list::Behaviour<BlockedPeers>,
    pub(super) gossipsub: gossipsub::Behaviour,
    pub(super) requests: Requests,
    pub(super) identify: identify::Behaviour,
    pub(super) ping: ping::Behaviour,
    pub(super) mdns: Toggle<mdns::tokio::Behaviour>,
}

impl Behaviour {
    pub(super) fn new(cfg: &SwarmConfig) -> Result<Self, SwarmError> {
        let peer_id = cfg.keypair.public().to_peer_id();
        let mdns = if cfg.mdns {
            let config = mdns::Config {
                query_interval: cfg.mdns_interval,
                ..mdns::Config::default()
            };
            Some(mdns::tokio::Behaviour::new(config, peer_id).map_err(SwarmError::Mdns)?)
        } else {
            None
        };
        let ping = ping::Config::new()
            .with_interval(cfg.ping_interval)
            .with_timeout(cfg.ping_interval * 3);
        Ok(Self {
            block: allow_block_list::Behaviour::default(),
            gossipsub: gossipsub(&cfg.keypair, &cfg.topics, cfg.max_gossip_bytes)?,
            requests: requests(cfg)?,
            identify: identify(&cfg.keypair),
            ping: ping::Behaviour::new(ping),
            mdns: Toggle::from(mdns),
        })
    }
}

fn identify(keypair: &Keypair) -> identify::Behaviour {
    let config = identify::Config::new(IDENTIFY_VERSION.to_owned(), keypair.public())
        .with_agent_version(format!("renderswarm/{}", env!("CARGO_PKG_VERSION")))
        .with_push_listen_addr_updates(true);
    identify::Behaviour::new(config)
}

/// One request-response behaviour per protocol spec, in the config's order.
fn requests(cfg: &SwarmConfig) -> Result<Requests, SwarmError> {
    let mut behaviours = Vec::with_capacity(cfg.protocols.len());
    for (i, spec) in cfg.protocols.iter().enumerate() {
        let name = StreamProtocol::try_from_owned(spec.name.to_owned()).map_err(|_| {
            SwarmError::BadProtocol {
                name: spec.name.to_owned(),
            }
        })?;
        if cfg.protocols[..i].iter().any(|p| p.name == spec.name) {
            return Err(SwarmError::DuplicateProtocol {
                name: spec.name.to_owned(),
            });
        }
        for (what, limit) in [
            ("max_request", spec.max_request),
            ("max_response", spec.max_response),
        ] {
            if u32::try_from(limit).is_err() {
                return Err(SwarmError::LimitTooLarge {
                    name: spec.name.to_owned(),
                    what,
                    limit,
                });
            }
        }
        let codec = RawCodec {
            max_request: spec.max_request,
            max_response: spec.max_response,
        };
        let config = request_response::Config::default().with_request_timeout(spec.timeout);
        behaviours.push(request_response::Behaviour::with_codec(
            codec,
            [(name, request_response::ProtocolSupport::Full)],
            config,
        ));
    }
    Ok(Requests::new(behaviours))
}

/// Gossipsub tuned for 2-20 nodes, with scoring; subscribed to `topics`.
fn gossipsub(
    keypair: &Keypair,
    topics: &[String],
    max_gossip_bytes: usize,
) -> Result<gossipsub::Behaviour, SwarmError> {
    let config = gossipsub::ConfigBuilder::default()
        .mesh_n(4)
        .mesh_n_low(1)
        .mesh_n_high(8)
        .mesh_outbound_min(1)
        .gossip_lazy(4)
        .heartbeat_initial_delay(Duration::from_millis(100))
        .heartbeat_interval(Duration::from_millis(500))
        .history_length(12)
        .history_gossip(4)
        .flood_publish(true)
        .validate_messages()
        .validation_mode(ValidationMode::Strict)
        .max_transmit_size(max_gossip_bytes.saturating_add(GOSSIP_ENVELOPE))
        .build()
        .map_err(|e| SwarmError::Gossipsub(e.to_string()))?;
    let mut behaviour =
        gossipsub::Behaviour::new(MessageAuthenticity::Signed(keypair.clone()), config)
            .map_err(|e| SwarmError::Gossipsub(e.to_owned()))?;
    let (params, thresholds) = score_params(topics);
    behaviour
        .with_peer_score(params, thresholds)
        .map_err(SwarmError::Gossipsub)?;
    for topic in topics {
        behaviour
            .subscribe(&IdentTopic::new(topic.as_str()))
            .map_err(|e| SwarmError::Gossipsub(format!("subscribing to {topic}: {e}")))?;
    }
    Ok(behaviour)
}

/// Peer-score parameters and thresholds; see the module documentation.
pub(super) fn score_params(topics: &[String]) -> (PeerScoreParams, PeerScoreThresholds) {
    let topic_params = TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.0,
        first_message_deliveries_weight: 0.1,
        first_message_deliveries_decay: gossipsub::score_parameter_decay(Duration::from_secs(60)),
        first_message_deliveries_cap: 10.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: gossipsub::score_parameter_decay(Duration::from_secs(
            600,
        )),
        ..TopicScoreParams::default()
    };
    let topics: HashMap<_, _> = topics
        .iter()
        .map(|t| (IdentTopic::new(t.as_str()).hash(), topic_params.clone()))
        .collect();
    let params = PeerScoreParams {
        topics,
        topic_score_cap: 10.0,
        app_specific_weight: 1.0,
        ip_colocation_factor_weight: 0.0,
        ..PeerScoreParams::default()
    };
    let thresholds = PeerScoreThresholds {
        gossip_threshold: -20.0,
        publish_threshold: -40.0,
        graylist_threshold: -80.0,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 1.0,
    };
    (params, thresholds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_parameters_are_accepted_by_gossipsub() {
        let (params, thresholds) = score_params(&["a".to_owned(), "b".to_owned()]);
        assert_eq!(params.validate(), Ok(()));
        assert_eq!(thresholds.validate(), Ok(()));
        assert_eq!(params.topics.len(), 2);
        for p in params.topics.values() {
            assert!(p.invalid_message_deliveries_weight < 0.0);
        }
    }

    #[test]
    fn three_rejections_reach_the_graylist() {
        let (params, thresholds) = score_params(&["a".to_owned()]);
        let p4 = params
            .topics
            .values()
            .map(|t| t.invalid_message_deliveries_weight)
            .sum::<f64>();
        // P4 is weight * count^2; the positive part is capped at +1.
        let positive_cap = 1.0;
        assert!(
            p4 + positive_cap > thresholds.gossip_threshold,
            "one mistake is forgiven"
        );
        assert!(
            p4 * 9.0 + positive_cap < thresholds.graylist_threshold,
            "three graylist"
        );
    }
}
