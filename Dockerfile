# Airflow image with Dunning's locked dependencies; the repo's dags/, plugins/ and include/ are mounted.
FROM apache/airflow:3.3.2-python3.11
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt
