"""Access control (guide chapter 2): the action catalogue, policies in the guide's JSON format, the
system policies and the evaluator (pure), and the FastAPI dependency that authorizes every route
(``authorize``). Shared by every service's HTTP routes; imports only ``services.lib.common``."""
