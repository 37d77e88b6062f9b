from fastapi import APIRouter, Depends

from api import usecases
from api.auth import rate_limit
from api.deps import CatalogDep, RequesterDep, SessionDep, SettingsDep
from api.schemas import ChatIn, ChatOut, ErrorOut

router = APIRouter(prefix="/api/v1", tags=["chat"])


@router.post("/chat", response_model=ChatOut, dependencies=[Depends(rate_limit("chat"))],
             responses={400: {"model": ErrorOut}, 401: {"model": ErrorOut}, 403: {"model": ErrorOut},
                        404: {"model": ErrorOut}, 429: {"model": ErrorOut}})
def post_chat(body: ChatIn, session: SessionDep, caller: RequesterDep, catalog: CatalogDep,
              settings: SettingsDep) -> ChatOut:
    """Interpret one message. A complete patch intent comes back as a `proposal` that waits for approval."""
    return usecases.chat_turn(session, conversation_id=body.conversation_id, text=body.text, user=caller.user,
                              catalog=catalog, settings=settings)
