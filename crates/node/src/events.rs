//! What happens in a node, as it happens: VRRP transitions, real servers and quorums
//! changing, upstream peers leaving or joining the rotation, reloads and drains. Sent on a
//! broadcast channel ([`crate::Node::events`]) for the dashboard and anyone else who
//! listens; nothing is lost between two looks at the state, however short the flap.

use serde::Serialize;
use tokio::sync::broadcast;

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A VRRP instance changed state.
    Vrrp {
        instance: String,
        from: String,
        to: String,
        reason: String,
    },
    /// A real server went up or down in a virtual server (every checker agreeing).
    RealServer {
        virtual_server: String,
        address: String,
        up: bool,
        /// The failing checker's last reason, for a server going down.
        reason: Option<String>,
    },
    /// A virtual server gained or lost its quorum.
    Quorum { virtual_server: String, up: bool },
    /// An upstream peer left or rejoined the proxy's rotation by its health check.
    UpstreamPeer {
        upstream: String,
        peer: String,
        in_rotation: bool,
    },
    /// The operator drained or undrained real servers and peers.
    Drain { target: String, on: bool },
    /// A configuration was applied.
    Reloaded { hash: String },
    /// A reload was refused; the running configuration stays.
    ReloadRefused { error: String },
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Vrrp {
                instance,
                from,
                to,
                reason,
            } => write!(f, "VRRP {instance}: {from} → {to} ({reason})"),
            Event::RealServer {
                virtual_server,
                address,
                up,
                reason,
            } => {
                let state = if *up { "up" } else { "down" };
                write!(f, "real server {address} in {virtual_server}: {state}")?;
                match reason {
                    Some(r) => write!(f, " ({r})"),
                    None => Ok(()),
                }
            }
            Event::Quorum { virtual_server, up } => write!(
                f,
                "{virtual_server}: quorum {}",
                if *up { "gained" } else { "lost" }
            ),
            Event::UpstreamPeer {
                upstream,
                peer,
                in_rotation,
            } => write!(
                f,
                "upstream {upstream} peer {peer}: {}",
                if *in_rotation {
                    "in rotation"
                } else {
                    "out (health check)"
                }
            ),
            Event::Drain { target, on } => {
                write!(f, "{target} {}", if *on { "drained" } else { "undrained" })
            }
            Event::Reloaded { hash } => write!(f, "configuration reloaded ({hash})"),
            Event::ReloadRefused { .. } => {
                write!(f, "a reload was refused; the running configuration stays")
            }
        }
    }
}

/// Where events are sent; cheap to clone. Sending with nobody listening is not an error.
#[derive(Debug, Clone)]
pub struct Events(broadcast::Sender<Event>);

impl Default for Events {
    fn default() -> Events {
        Events(broadcast::channel(256).0)
    }
}

impl Events {
    pub fn send(&self, e: Event) {
        tracing::debug!("event: {e}");
        let _ = self.0.send(e);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_the_dashboard_shows_them() {
        let vrrp = Event::Vrrp {
            instance: "VI_1".into(),
            from: "BACKUP".into(),
            to: "MASTER".into(),
            reason: "no advert for 3 intervals".into(),
        };
        assert_eq!(
            vrrp.to_string(),
            "VRRP VI_1: BACKUP → MASTER (no advert for 3 intervals)"
        );
        let down = Event::RealServer {
            virtual_server: "10.0.0.1:80 TCP".into(),
            address: "10.0.1.1:80".into(),
            up: false,
            reason: Some("connection refused".into()),
        };
        assert_eq!(
            down.to_string(),
            "real server 10.0.1.1:80 in 10.0.0.1:80 TCP: down (connection refused)"
        );
        let json = serde_json::to_value(&down).unwrap();
        assert_eq!(json["kind"], "real_server");
        assert_eq!(
            Event::Reloaded { hash: "ab".into() }.to_string(),
            "configuration reloaded (ab)"
        );
    }

    #[test]
    fn every_listener_gets_every_event() {
        let events = Events::default();
        let (mut a, mut b) = (events.subscribe(), events.subscribe());
        events.send(Event::Quorum {
            virtual_server: "v".into(),
            up: false,
        });
        assert_eq!(a.try_recv().unwrap(), b.try_recv().unwrap());
    }
}
