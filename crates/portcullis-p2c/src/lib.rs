//! portcullis-p2c
#![forbid(unsafe_code)]
