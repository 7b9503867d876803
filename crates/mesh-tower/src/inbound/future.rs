/// Response future of [`Inbound`](super::Inbound).
pub type ResponseFuture<F, B, E> = crate::future::StageFuture<F, B, E>;
