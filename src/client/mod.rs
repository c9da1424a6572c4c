//! One client from login to goodbye: startup negotiation, the login (authentication is in
//! `crate::auth`), the session loop that attaches backends and relays (`session/`), and what
//! transaction mode adds so that clients can share backends (`features/`).

pub mod authenticate;
pub(crate) mod buffers;
pub mod cancel;
pub mod conn;
pub mod features;
pub mod login;
pub mod params;
pub mod peers;
pub mod registry;
pub mod session;
pub mod startup;

/// Bytes one logged-in client takes however it is used (SHOW MEM): its session, its registry
/// entry and its cancel slot. Its read and write buffers come on top while it is busy; they
/// grow with its messages and are released while it idles, so they have no fixed size.
pub fn client_size() -> usize {
    std::mem::size_of::<session::Session>()
        + std::mem::size_of::<registry::ClientEntry>()
        + std::mem::size_of::<cancel::CancelSlot>()
}
