//! Policies: what a group of devices should have, shipped as immutable, hashed, signed versions. Built so
//! far: the version's artifact, a bundle ([`bundle`]), its signatures ([`signature`]) and which the server
//! trusts ([`trust`]), the tool that packs a folder into one ([`pack`]), and storing policies and their
//! versions ([`admin`]).

pub mod admin;
pub mod bundle;
pub mod gates;
pub mod holdings;
pub mod materialize;
pub mod pack;
pub mod profile;
pub mod rollout;
pub mod signature;
pub mod stages;
pub mod trust;
