//! portcullis
#![forbid(unsafe_code)]
