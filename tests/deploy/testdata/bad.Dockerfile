# A Dockerfile that breaks every rule of lint_dockerfiles.mjs once; the
# deploy_dockerfile_lint_rejects_bad test expects each rule to fire.
FROM debian:bookworm-slim AS build
MAINTAINER someone@example.com
ADD https://example.com/tool.tar.gz /tmp/
RUN apt-get install curl
RUN curl -s http://example.com | tar x
RUN sudo make install
WORKDIR src

FROM ubuntu
COPY --from=builder /src/app /app
CMD /app --serve
