"""The Docker-free local stack: a real S3 server, an HTTP -> API Gateway bridge, the demo. Not shipped to Lambda."""
