# Sourced at the start of each device-machine run of the embedded model (see /work/shared/tools/device-wheels.sh):
# the device image lacks diffusers, which travels as wheels in .whl/, and swiftdit is installed editable.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
