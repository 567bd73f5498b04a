//! Generated protobuf and gRPC code for docproc; nothing else lives here.
#![allow(unreachable_pub, missing_docs, clippy::doc_lazy_continuation)]

/// The broker's wire protocol, `docproc.broker.v1`.
pub mod broker {
    pub mod v1 {
        tonic::include_proto!("docproc.broker.v1");
    }
}

/// Encoded `FileDescriptorSet` of every docproc proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("docproc_descriptor");
