//! portcullis-test
#![forbid(unsafe_code)]
