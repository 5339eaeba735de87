//! Sandboxes on a Kubernetes cluster: the objects one sandbox is made of ([`manifest`], pure;
//! with [`resources`] and the Pod Security level a pod meets, [`security`]), their life through
//! the API server ([`cluster`]), the pod reached and held through its exec and attach streams
//! ([`reach`], by the way [`way`] names), and the backend behind the seam ([`backend`]). See the book's guide "Sandboxes
//! on Kubernetes".

pub(crate) mod backend;
pub(crate) mod cluster;
pub(crate) mod manifest;
pub(crate) mod reach;
pub(crate) mod resources;
pub(crate) mod security;
pub(crate) mod way;
