"""Libraries the services are built on: infrastructure (common), the job engine, IAM, the model
catalog, ML code, the inference engine, embedded servers, read-models and resource pools. They
import no service and no app (pyproject's import-linter contracts)."""
