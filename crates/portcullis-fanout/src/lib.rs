//! portcullis-fanout
#![forbid(unsafe_code)]
