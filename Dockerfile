# The progression pipelines on the official Airflow image. Keep the tag's Airflow version equal to the
# `apache-airflow==` pin in requirements.txt (tests/test_deployment.py checks it).
FROM apache/airflow:3.3.2-python3.11

# Extending the image as the Airflow docs recommend: as user airflow, with apache-airflow pinned to the image's
# own version so pip cannot move Airflow while it installs the project's pins.
USER airflow
COPY --chown=airflow:root requirements.txt /opt/airflow/requirements.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /opt/airflow/requirements.txt

# The project. docker-compose.yml mounts dags/, plugins/, include/ and deploy/ from the working tree over these
# copies; they are here so the image also runs on its own (e.g. pushed to a registry for a cluster).
COPY --chown=airflow:root bin/ /opt/airflow/bin/
COPY --chown=airflow:root include/ /opt/airflow/include/
COPY --chown=airflow:root plugins/ /opt/airflow/plugins/
COPY --chown=airflow:root dags/ /opt/airflow/dags/
COPY --chown=airflow:root deploy/ /opt/airflow/deploy/

# The logic lives in include/progression, the Airflow glue in plugins/progression_airflow.py.
ENV PYTHONPATH=/opt/airflow/include:/opt/airflow/plugins \
    PROGRESSION_HOME=/opt/airflow \
    PROGRESSION_CUSTOMERS=/opt/airflow/deploy/customers.yaml

# Where airflow-init writes the simple auth manager's passwords file (a named volume in compose; it takes this
# directory's owner and mode when first created). Group root, as every directory of the official image, so an
# arbitrary AIRFLOW_UID with group 0 can write it.
RUN mkdir -p /opt/airflow/auth && chmod 0770 /opt/airflow/auth
