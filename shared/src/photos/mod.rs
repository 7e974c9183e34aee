//! Photos (PetCam's feature set, owner-scoped): Real-ESRGAN upscaling and best-cut as jobs, and
//! the photos those jobs make. A photo is the job that made it: its id is the job's, its status
//! the job's, its files the job's artifacts under `photos/{user}/{id}/`.

pub mod handlers;
pub mod kinds;
pub mod media;
pub mod work;
