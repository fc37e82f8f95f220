from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_basic_gate import BasicGate, current_key

db = SQLAlchemy()
gate = BasicGate(db=db)


def create_app(config=None):
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///hello.sqlite"
    app.config.update(config or {})
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
