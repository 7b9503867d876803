//! Small macros shared by the layers.

/// Makes an extension type the layers insert into requests an axum
/// extractor: `T` (rejected with `$rejection` when absent) and `Option<T>`.
macro_rules! extension_extractor {
    ($ty:ty, $rejection:ident) => {
        impl<S: Send + Sync> axum::extract::FromRequestParts<S> for $ty {
            type Rejection = $rejection;

            async fn from_request_parts(
                parts: &mut http::request::Parts,
                _state: &S,
            ) -> Result<Self, Self::Rejection> {
                parts.extensions.get::<$ty>().cloned().ok_or($rejection(()))
            }
        }

        impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for $ty {
            type Rejection = std::convert::Infallible;

            async fn from_request_parts(
                parts: &mut http::request::Parts,
                _state: &S,
            ) -> Result<Option<Self>, Self::Rejection> {
                Ok(parts.extensions.get::<$ty>().cloned())
            }
        }
    };
}

pub(crate) use extension_extractor;

/// `Clone`, `Debug` and `get_ref`/`get_mut`/`into_inner` for a stage's
/// service, a struct of `inner`, `shared` (an `Arc`) and `cache`.
macro_rules! stage_service {
    ($name:ident) => {
        impl<S: Clone> Clone for $name<S> {
            fn clone(&self) -> Self {
                $name {
                    inner: self.inner.clone(),
                    shared: self.shared.clone(),
                    cache: self.cache.clone(),
                }
            }
        }

        impl<S: std::fmt::Debug> std::fmt::Debug for $name<S> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("inner", &self.inner)
                    .finish_non_exhaustive()
            }
        }

        impl<S> $name<S> {
            /// The wrapped service.
            pub fn get_ref(&self) -> &S {
                &self.inner
            }
            /// The wrapped service, mutably.
            pub fn get_mut(&mut self) -> &mut S {
                &mut self.inner
            }
            /// Unwraps the service.
            pub fn into_inner(self) -> S {
                self.inner
            }
        }
    };
}

pub(crate) use stage_service;
