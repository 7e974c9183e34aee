//! Videos (LOKIZ's studio, owner-scoped): video uploads probed and checked before any work,
//! videos as objects with a poster, a thumbnail strip and a preview, and the studio's job kinds
//! (`capture_frame`, `select_range`). Like a photo, a video is the job that made it: its id is
//! the job's, its status the job's, its files under `videos/{user}/{id}/`. FFmpeg does the work
//! ([`crate::video`]).

pub mod handlers;
pub mod kinds;
pub mod work;

/// The kinds whose jobs are videos.
pub const VIDEO_KINDS: [&str; 3] = ["video_import", "select_range", "mux_audio"];

pub use crate::video::{VIDEO_TYPES, content_type};

/// Where a video's files are.
pub fn prefix(user_id: &str, video_id: &str) -> String {
    crate::media::output_prefix(crate::media::Outputs::Videos, user_id, video_id)
}
