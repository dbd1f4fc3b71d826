//! The external gRPC contract of Cleaning Service Park, package `cleaning.v1`
//! (`proto/cleaning/v1/commands.proto`), generated once. The command side serves it; its
//! clients (the policies, the benchmarks, chaos) depend on this crate, not on the server.

tonic::include_proto!("cleaning.v1");

/// For server reflection: grpcurl lists and calls everything without .proto files.
pub const DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("cleaning_v1_descriptor");

/// Every service of the contract, as gRPC paths and health checks name them. Each deployable
/// serves some of them; tracing and health cover exactly these.
pub const SERVICES: [&str; 5] = [
    "cleaning.v1.ReservationService",
    "cleaning.v1.PaymentService",
    "cleaning.v1.PaymethodService",
    "cleaning.v1.MessageService",
    "cleaning.v1.CustomerService",
];

#[cfg(test)]
mod tests {
    use tonic::server::NamedService;

    use super::*;

    #[test]
    fn the_service_list_names_the_generated_services() {
        let generated = [
            reservation_service_server::ReservationServiceServer::<()>::NAME,
            payment_service_server::PaymentServiceServer::<()>::NAME,
            paymethod_service_server::PaymethodServiceServer::<()>::NAME,
            message_service_server::MessageServiceServer::<()>::NAME,
            customer_service_server::CustomerServiceServer::<()>::NAME,
        ];
        assert_eq!(generated, SERVICES);
    }
}
