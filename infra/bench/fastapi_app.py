"""The peer: a minimal FastAPI app with the same health route, as PetCam would serve it."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/health")
def health():
    return {"status": "ok", "version": "0.1.0"}
