%% `left` for the members of a node that went away.
%%
%% When a node dies or is cut off, nobody sends `user_left` for its users:
%% the original's sessions there are gone, and the gproc_dist leader purges
%% their registrations silently. A Rust node tells its own members; this
%% process does the same for the members on its original node: for every
%% chat that has members here, one `user_left` record per member of the
%% lost node, sent to each local member, numbered like any other event
%% (flack_migration_seq).
%%
%% Who was on the lost node has to be known after the fact, when the purge
%% may already have removed it from this node's replica of the registry
%% (on the leader's own node it often has: gen_leader purges as soon as it
%% hears of the loss). So this process keeps its own view:
%%
%%  - every `refresh_ms` (1000) it reads the remote members of the chats
%%    that have members here (user id and chats, by pid) from the replica,
%%    and monitors each such process;
%%  - a monitored process that ends while its node is still connected
%%    (`DOWN` with any reason but `noconnection`) is dropped from the view;
%%    if it was killed (reason `killed`: it cannot have said goodbye), or
%%    the replica still lists it in chats (it did not leave them), this
%%    node's members of those chats are told it left; a session that left
%%    its chats removed itself first and is not announced again;
%%  - when a node's connection goes down ({nodedown, Node} of
%%    erlang:monitor_node/2, sent by the runtime as the connection goes),
%%    the replica is read at once (this process runs at high priority):
%%    for a lost process the replica still lists, its entries are used, for
%%    one the purge already removed, the view's. Numbering and sending
%%    (leader calls, which wait for an election when the lost node led)
%%    happen afterwards in a process of their own.
%%
%% Each member is announced once. What this cannot know: a member that
%% joined a chat less than refresh_ms before its node was lost AND whose
%% entries the purge removed before this process read them is not
%% announced; one that left a chat (staying connected) in that same window
%% may be announced in it again; and on a node that does not lead, a
%% session that left its chats and ended at once could be announced again
%% if the leader's news of its leaving arrived after the news of its end
%% (they travel different connections; not seen in the tests).
-module(flack_migration_watch).
-behaviour(gen_server).

-export([start_link/0, lost_members/2, plan/1, merge/3, remote_members/1, still_registered/2,
         ended_in/3]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% watched: connected nodes under monitor_node/2.
%% view: remote member pid => {UserId, [Chat], MonitorRef}.
init([]) ->
    process_flag(priority, high),
    ok = net_kernel:monitor_nodes(true, [{node_type, visible}]),
    State = #{watched => lists:foldl(fun watch/2, #{}, nodes()), view => #{}},
    self() ! refresh,
    {ok, State}.

%% One monitor per connected node (a second would mean a second `left`).
watch(Node, Watched) ->
    case maps:is_key(Node, Watched) of
        true -> Watched;
        false ->
            erlang:monitor_node(Node, true),
            Watched#{Node => true}
    end.

handle_call(_Request, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast(_Request, State) ->
    {noreply, State}.

%% From monitor_node/2: the connection is gone. Read first, then act.
handle_info({nodedown, Node}, #{watched := Watched, view := View} = State) ->
    Lost = merge(lost_members(gproc, Node), Node, View),
    case plan(Lost) of
        [] -> ok;
        Plan ->
            error_logger:info_msg("flack_migration: ~p is gone; telling this node's "
                                  "members who of its users left: ~p~n", [Node, Plan]),
            spawn(fun() -> announce(Plan) end)
    end,
    Kept = maps:filter(fun(Pid, {_, _, Ref}) ->
                               node(Pid) =/= Node orelse not demonitor(Ref, [flush])
                       end, View),
    {noreply, State#{watched := maps:remove(Node, Watched), view := Kept}};
%% From net_kernel (3-tuples): a node connected; watch it.
handle_info({nodeup, Node, _Info}, #{watched := Watched} = State) ->
    {noreply, State#{watched := watch(Node, Watched)}};
handle_info({nodedown, _Node, _Info}, State) ->
    {noreply, State};
%% noconnection: its node is being lost; {nodedown, _} decides.
handle_info({'DOWN', _Ref, process, _Pid, noconnection}, State) ->
    {noreply, State};
%% A member's process ended while its node was connected. A session that
%% left its chats (goodbye, close, its node stopped cleanly) removed its
%% memberships before it ended; one that was killed could not, and nobody
%% told its chats. The leader may have cleaned up after it already (it
%% monitors registered processes itself), so for a process that was
%% killed the view says which chats; for any other ending only what the
%% replica still lists counts, as the session may have left the rest.
handle_info({'DOWN', _Ref, process, Pid, Reason}, #{view := View} = State) ->
    Known = case maps:find(Pid, View) of
                {ok, {KnownId, KnownChats, _}} -> {KnownId, KnownChats};
                error -> {undefined, []}
            end,
    case ended_in(still_registered(gproc, Pid), Known, Reason) of
        {UserId, [_ | _] = In} when UserId =/= undefined ->
            spawn(fun() -> announce([{Chat, [UserId]} || Chat <- In]) end);
        _ ->
            ok
    end,
    {noreply, State#{view := maps:remove(Pid, View)}};
handle_info(refresh, #{view := View} = State) ->
    erlang:send_after(application:get_env(flack_migration, refresh_ms, 1000), self(), refresh),
    {noreply, State#{view := refresh(View)}};
handle_info(_Message, State) ->
    {noreply, State}.

terminate(_Reason, _State) ->
    ok.

%% The view again from the replica: remote members (on connected nodes) of
%% chats with members here, each monitored once.
refresh(View) ->
    Connected = maps:from_list([{N, true} || N <- nodes()]),
    Now = maps:filter(fun(Pid, _) -> maps:is_key(node(Pid), Connected) end,
                      remote_members(gproc)),
    Gone = maps:without(maps:keys(Now), View),
    [demonitor(Ref, [flush]) || {_, _, Ref} <- maps:values(Gone)],
    maps:map(fun(Pid, {UserId, Chats}) ->
                     Ref = case View of
                               #{Pid := {_, _, Known}} -> Known;
                               _ -> erlang:monitor(process, Pid)
                           end,
                     {UserId, Chats, Ref}
             end, Now).

%% Remote processes that are members of chats with a member on this node:
%% #{Pid => {UserId, [Chat]}} (UserId undefined when the process has no
%% user registration).
-spec remote_members(ets:tab()) -> #{pid() => {term(), [binary()]}}.
remote_members(Table) ->
    Me = node(),
    Rows = ets:select(Table,
                      [{{{{p, g, '$1'}, '$2'}, '_', '_'}, [{is_binary, '$1'}, {is_pid, '$2'}],
                        [{{member, '$1', '$2'}}]},
                       {{{'$2', {n, g, '$2'}}, '$3'}, [{is_pid, '$2'}, {'=/=', {node, '$2'}, Me}],
                        [{{user, '$2', '$3'}}]}]),
    Here = maps:from_list([{Chat, true} || {member, Chat, Pid} <- Rows, node(Pid) =:= Me]),
    Users = maps:from_list([{Pid, user_id(Opts)} || {user, Pid, Opts} <- Rows]),
    lists:foldl(fun({member, Chat, Pid}, Acc) when node(Pid) =/= Me ->
                        case maps:is_key(Chat, Here) of
                            false -> Acc;
                            true ->
                                {UserId, Chats} = maps:get(Pid, Acc, {maps:get(Pid, Users, undefined), []}),
                                Acc#{Pid => {UserId, [Chat | Chats]}}
                        end;
                   (_, Acc) -> Acc
                end, #{}, Rows).

%% Whose departure a process's end means, and from which chats: Listed is
%% what the replica still says ({UserId, Chats}), Known what the view said.
-spec ended_in({term(), [binary()]}, {term(), [binary()]}, term()) -> {term(), [binary()]}.
ended_in({ListedId, Listed}, {KnownId, Known}, Reason) ->
    UserId = case ListedId of
                 undefined -> KnownId;
                 _ -> ListedId
             end,
    case {Listed, Reason} of
        {[_ | _], _} -> {UserId, Listed};
        {[], killed} -> {UserId, Known};
        {[], _} -> {UserId, []}
    end.

%% The user id and the chats Pid is registered with in the replica Table
%% (its reverse entries {{Pid, Key}, Opts}: a lookup by pid).
-spec still_registered(ets:tab(), pid()) -> {term(), [binary()]}.
still_registered(Table, Pid) ->
    Rows = ets:select(Table, [{{{Pid, {p, g, '$1'}}, '_'}, [{is_binary, '$1'}], [{{chat, '$1'}}]},
                              {{{Pid, {n, g, Pid}}, '$1'}, [], [{{user, '$1'}}]}]),
    UserId = case [Opts || {user, Opts} <- Rows] of
                 [Opts | _] -> user_id(Opts);
                 [] -> undefined
             end,
    {UserId, [Chat || {chat, Chat} <- Rows]}.

%% What the registry replica Table says about Node's processes, in one
%% pass: {member, Chat, Pid} for each chat membership (a {p,g,Chat} with a
%% binary Chat: other properties are not chats), {user, Pid, Opts} for each
%% user registration, {counter, Chat, Value} for each sequence counter
%% Node's processes own.
-spec lost_members(ets:tab(), node()) -> [tuple()].
lost_members(Table, Node) ->
    OnNode = fun(Var) -> [{'==', {node, Var}, Node}] end,
    ets:select(Table,
               [{{{{p, g, '$1'}, '$2'}, '_', '_'}, [{is_binary, '$1'}, {is_pid, '$2'} | OnNode('$2')],
                 [{{member, '$1', '$2'}}]},
                {{{'$2', {n, g, '$2'}}, '$3'}, [{is_pid, '$2'} | OnNode('$2')],
                 [{{user, '$2', '$3'}}]},
                {{{{c, g, {flack_seq, '$1'}}, '$2'}, '_', '$3'}, [{is_pid, '$2'} | OnNode('$2')],
                 [{{counter, '$1', '$3'}}]}]).

%% The lost node's members: what the replica still says about a process,
%% and what the view last said where the purge already removed it from
%% the replica (its user registration, or all of its memberships). Same
%% shape as lost_members/2.
-spec merge([tuple()], node(), map()) -> [tuple()].
merge(Lost, Node, View) ->
    WithMembers = maps:from_list([{Pid, true} || {member, _, Pid} <- Lost]),
    WithUser = maps:from_list([{Pid, true} || {user, Pid, _} <- Lost]),
    Extra = maps:fold(
              fun(Pid, {UserId, Chats, _}, Acc) when node(Pid) =:= Node ->
                      User = [{user, Pid, [{attrs, [{user_id, UserId}]}]}
                              || not maps:is_key(Pid, WithUser)],
                      Members = [{member, Chat, Pid} || not maps:is_key(Pid, WithMembers),
                                                        Chat <- Chats],
                      User ++ Members ++ Acc;
                 (_, _, Acc) -> Acc
              end, [], View),
    Lost ++ Extra.

%% Who hears what: for each chat with a member on the lost node, the
%% lost members' user ids ({Chat, [UserId]}, one per lost member). Chats are kept
%% whatever the local membership; announce/1 looks local members up when
%% it sends. Members without a user registration (never authenticated, or
%% already gone) are skipped: there is no user id to announce. Counter
%% values come first as {counter, Chat, Value}.
-spec plan([tuple()]) -> [tuple()].
plan(Lost) ->
    Users = maps:from_list([{Pid, user_id(Opts)} || {user, Pid, Opts} <- Lost]),
    Counters = [{counter, Chat, Value} || {counter, Chat, Value} <- Lost],
    ByChat = lists:foldl(
               fun({member, Chat, Pid}, Acc) ->
                       case maps:get(Pid, Users, undefined) of
                           undefined -> Acc;
                           UserId -> Acc#{Chat => maps:get(Chat, Acc, []) ++ [UserId]}
                       end;
                  (_, Acc) -> Acc
               end, #{}, Lost),
    case maps:size(ByChat) of
        0 -> [];
        _ -> Counters ++ lists:sort([{Chat, Ids} || {Chat, Ids} <- maps:to_list(ByChat)])
    end.

user_id(Opts) when is_list(Opts) ->
    case lists:keyfind(attrs, 1, Opts) of
        {attrs, Attrs} -> proplists:get_value(user_id, Attrs);
        false -> undefined
    end;
user_id(_) ->
    undefined.

%% Numbers and sends the plan's `user_left` records to this node's members
%% of each chat (the lost members are gone from the replica by now, or
%% are on another node: neither is sent to).
announce(Plan) ->
    [flack_migration_seq:remember(Chat, Value) || {counter, Chat, Value} <- Plan],
    lists:foreach(
      fun({Chat, UserIds}) ->
              case local_members(Chat) of
                  [] -> ok;
                  Members ->
                      lists:foreach(
                        fun(UserId) ->
                                Left = {user_left, Chat, UserId, timestamp(),
                                        flack_migration_seq:next(Chat)},
                                [Pid ! Left || Pid <- Members]
                        end, UserIds)
              end;
         (_) -> ok
      end, Plan).

local_members(Chat) ->
    [Pid || Pid <- gproc:lookup_pids({p, g, Chat}), node(Pid) =:= node()].

timestamp() ->
    {{Y, Mo, D}, {H, Mi, S}} = erlang:universaltime(),
    iolist_to_binary(io_lib:format("~4..0w-~2..0w-~2..0wT~2..0w:~2..0w:~2..0wZ",
                                   [Y, Mo, D, H, Mi, S])).
