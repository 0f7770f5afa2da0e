//! Policies: what a group of devices should have, shipped as immutable, hashed, signed versions and rolled
//! out in stages. The version's artifact, a bundle ([`bundle`], its declarations [`materialize`]d and its
//! [`profile`]s read), its signatures ([`signature`]) and which the server trusts ([`trust`]), the tool
//! that packs a folder into one ([`pack`]), storing policies and versions ([`admin`]); rolling a version
//! out ([`rollout`]: [`stages`], [`gates`], who holds what in [`holdings`]) and installing its profiles
//! ([`reconciler`]).

pub mod admin;
pub mod bundle;
pub mod gates;
pub mod holdings;
pub mod materialize;
pub mod pack;
pub mod profile;
pub mod reconciler;
pub mod rollout;
pub mod signature;
pub mod stages;
pub mod trust;
