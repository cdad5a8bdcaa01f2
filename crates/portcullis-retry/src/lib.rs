//! portcullis-retry
#![forbid(unsafe_code)]
