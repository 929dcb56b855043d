# A Beam SDK worker container with the speechid stack, for Dataflow (--sdk_container_image, --sdk_location
# container) and for Flink/Spark (--environment_type DOCKER --environment_config IMAGE).
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/speechid/worker:0.1.0 .
#   docker build --build-arg TF_PACKAGE='tensorflow[and-cuda]==2.21.0' -t .../worker-gpu:0.1.0 .   # GPU workers
#
# The base image is Beam's own, of the same Beam and Python versions as requirements.txt: its boot
# entrypoint is what the runners start.
FROM apache/beam_python3.11_sdk:2.77.0

ARG TF_PACKAGE=tensorflow==2.21.0
ENV TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PIP_NO_CACHE_DIR=1

WORKDIR /opt/speechid
COPY requirements.txt .
# The pinned stack first (a layer that changes only with requirements.txt), then the GPU variant of
# TensorFlow if asked for, then the package itself without touching the pins.
RUN pip install -r requirements.txt \
 && pip install "${TF_PACKAGE}"
COPY setup.py README.md ./
COPY speechid speechid
COPY pipelines pipelines
COPY model model
COPY indexing indexing
RUN pip install --no-deps . && python -c "import speechid.pipelines.prep, speechid.pipelines.embed, speechid.indexing"

ENTRYPOINT ["/opt/apache/beam/boot"]
