# A Flotilla node: `flotilla serve` as a non-root user, data in the /data volume.
#
# BASE is any image with python3 (>= 3.11) and its venv module. The default is
# the official slim Python image; machines that cannot pull images build from
# their own (tests/e2e/base_image.py makes one from Debian's packages).
#
# WHEELHOUSE, when set, is a folder of wheels inside the build context that pip
# installs from instead of PyPI (`pip wheel --wheel-dir build/wheelhouse .
# setuptools` on a machine that reaches PyPI); empty, pip uses PyPI as usual.
ARG BASE=python:3.12-slim

FROM ${BASE} AS install
ARG WHEELHOUSE=
# .dockerignore narrows the context to what the install needs.
COPY . /src
RUN if [ -n "$WHEELHOUSE" ]; then set -- --no-index --find-links "/src/$WHEELHOUSE"; fi \
    && python3 -m venv /opt/flotilla \
    && /opt/flotilla/bin/pip install --no-cache-dir --disable-pip-version-check "$@" /src

FROM ${BASE}
# A fixed uid, so the data and secret volumes keep their owner across rebuilds.
RUN groupadd --system --gid 10001 flotilla \
    && useradd --system --uid 10001 --gid flotilla --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin flotilla \
    && mkdir -p /data /secret \
    && chown flotilla:flotilla /data /secret \
    && chmod 0700 /data /secret
COPY --from=install /opt/flotilla /opt/flotilla
ENV PATH=/opt/flotilla/bin:$PATH \
    PYTHONUNBUFFERED=1
USER flotilla
WORKDIR /data
VOLUME /data
# 5000: registry API (clients), 6000: Raft, 7000: chunk data plane (peers only).
EXPOSE 5000 6000 7000
ENTRYPOINT ["flotilla"]
CMD ["serve", "--data", "/data", "--listen", "0.0.0.0:5000", "--raft", "0.0.0.0:6000", \
     "--data-listen", "0.0.0.0:7000"]
