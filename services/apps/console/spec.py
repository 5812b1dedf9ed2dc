from services.lib.common.service_spec import ServiceSpec
from services.apps.console import routes

# Static only: the console talks to the other services through their REST APIs from the browser.
CONSOLE = ServiceSpec(name="console", routers=[routes.router])
