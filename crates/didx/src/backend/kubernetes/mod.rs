//! Sandboxes on a Kubernetes cluster: what is built so far is the objects one sandbox is made of
//! ([`manifest`], pure; with [`resources`] and the Pod Security level a pod meets,
//! [`security`]), which `didx k8s render` prints. The backend that creates them, reaches the
//! inner engine over an exec stream and holds the pod with a lease (see the book's architecture
//! page, "A Kubernetes backend") is not built yet.

pub(crate) mod backend;
pub(crate) mod cluster;
pub(crate) mod manifest;
pub(crate) mod reach;
pub(crate) mod resources;
pub(crate) mod security;
