from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_basic_gate import BasicGate, current_key

db = SQLAlchemy()
gate = BasicGate(db=db)


def create_app(config=None):
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///hello.sqlite"
    # FLASK_SQLALCHEMY_DATABASE_URI, FLASK_BASIC_GATE_REDIS_URL and friends
    app.config.from_prefixed_env()
    app.config.update(config or {})  # what the caller gives wins (tests)
    db.init_app(app)
    gate.init_app(app)  # after db.init_app

    @app.get("/hello")
    def hello():
        # Every route is protected: only a valid key gets here.
        return {"key": current_key.key, "package": current_key.package}

    @app.get("/health")
    @gate.exempt
    def health():
        return {"status": "ok"}

    return app
