//! What any image decoder here may allocate: the bounds `image_io` (PNG, JPEG) and
//! `exr_file` (OpenEXR) both enforce, whatever a file's header claims.

/// Largest accepted width or height of a decoded image.
pub const MAX_DIMENSION: u32 = 16_384;
/// Largest allocation a decoder may make.
pub const MAX_DECODED_BYTES: u64 = 1 << 30;
